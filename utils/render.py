"""Draw simple_spread episodes and save them as GIFs (matplotlib + Pillow, no display needed).

Used by `enjoy.py` and by `magpo_mpe.py --capture-video`. A frame is rebuilt from the agents'
observations (own position, landmarks relative to it), so it works the same for both env backends
and for the final observation of an episode, which the env has already reset past. mpe2's own
`rgb_array` rendering needs pygame and one unbatched env; this needs neither.
"""

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg  # headless: draws into memory
from matplotlib.figure import Figure
from matplotlib.patches import Circle
from PIL import Image

AGENT_RADIUS, LANDMARK_RADIUS = 0.15, 0.05  # mpe2's entity sizes
AGENT_COLOR, LANDMARK_COLOR = (0.35, 0.35, 0.85), (0.25, 0.25, 0.25)  # mpe2's colours
ARENA_EXTENT = 2.0
"""every frame of every GIF shows the square [-2, 2]^2: agents and landmarks start in [-1, 1]^2, and whatever
drifts further is clipped at the border (the title names the agents out of view)"""
TITLE_HEIGHT = 24
"""pixels reserved above the arena for the title, so nothing in the arena is drawn over it"""


def world_from_obs(obs):
    """Positions from one env's simple_spread observations (N, 6N): [vel, pos, landmarks - pos, ...]."""
    obs = np.asarray(obs, dtype=np.float64)
    num_agents = obs.shape[0]
    agent_pos = obs[:, 2:4]  # (N, 2)
    landmark_pos = obs[0, 4 : 4 + 2 * num_agents].reshape(num_agents, 2) + agent_pos[0]  # (N, 2)
    return {"agent_pos": agent_pos, "landmark_pos": landmark_pos}


def draw_frame(world, extent=ARENA_EXTENT, size=320, title=None):
    """One frame as an (size, size, 3) uint8 array: the title in the top TITLE_HEIGHT pixels, below it the
    square [-extent, extent]^2, with everything clipped to it."""
    fig = Figure(figsize=(size / 100, size / 100), dpi=100)
    canvas = FigureCanvasAgg(fig)
    side = (size - TITLE_HEIGHT) / size  # the arena's square, in figure fractions
    ax = fig.add_axes(((1 - side) / 2, 0, side, side))
    ax.set_xlim(-extent, extent)
    ax.set_ylim(-extent, extent)
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_color((0.8, 0.8, 0.8))
    for x, y in world["landmark_pos"]:
        ax.add_patch(Circle((x, y), LANDMARK_RADIUS, color=LANDMARK_COLOR))
    for i, (x, y) in enumerate(world["agent_pos"]):
        ax.add_patch(Circle((x, y), AGENT_RADIUS, color=AGENT_COLOR, alpha=0.8))  # patches clip to the axes
        ax.text(x, y, str(i), ha="center", va="center", color="white", fontsize=8, clip_on=True)
    outside = [str(i) for i, pos in enumerate(world["agent_pos"]) if np.abs(pos).max() > extent]
    if outside:
        title = f"{title or ''}  out of view: {', '.join(outside)}".strip()
    if title:
        fig.text(0.5, 1 - TITLE_HEIGHT / size / 2, title, ha="center", va="center", fontsize=8)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()


def save_gif(observations, path, fps=10, title=None):
    """Write one episode, given as its observations [(N, 6N) per step], as an animated GIF at `path`.

    Every frame of every GIF shows the same square, [-ARENA_EXTENT, ARENA_EXTENT]^2, so motion and files
    compare at one scale; mpe2 instead re-centres its camera each frame."""
    frames = [
        Image.fromarray(draw_frame(world_from_obs(obs), title=f"{title}  t={t}" if title else f"t={t}"))
        for t, obs in enumerate(observations)
    ]
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=int(1000 / fps), loop=0)
    return path
