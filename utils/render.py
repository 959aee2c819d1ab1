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


def world_from_obs(obs):
    """Positions from one env's simple_spread observations (N, 6N): [vel, pos, landmarks - pos, ...]."""
    obs = np.asarray(obs, dtype=np.float64)
    num_agents = obs.shape[0]
    agent_pos = obs[:, 2:4]  # (N, 2)
    landmark_pos = obs[0, 4 : 4 + 2 * num_agents].reshape(num_agents, 2) + agent_pos[0]  # (N, 2)
    return {"agent_pos": agent_pos, "landmark_pos": landmark_pos}


def draw_frame(world, extent, size=320, title=None):
    """One frame as an (size, size, 3) uint8 array; the view is the square [-extent, extent]^2."""
    fig = Figure(figsize=(size / 100, size / 100), dpi=100)
    canvas = FigureCanvasAgg(fig)
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_xlim(-extent, extent)
    ax.set_ylim(-extent, extent)
    ax.set_aspect("equal")
    ax.axis("off")
    for x, y in world["landmark_pos"]:
        ax.add_patch(Circle((x, y), LANDMARK_RADIUS, color=LANDMARK_COLOR))
    for i, (x, y) in enumerate(world["agent_pos"]):
        ax.add_patch(Circle((x, y), AGENT_RADIUS, color=AGENT_COLOR, alpha=0.8))
        ax.text(x, y, str(i), ha="center", va="center", color="white", fontsize=8)
    if title:
        ax.text(-extent + 0.05, extent - 0.05, title, ha="left", va="top", fontsize=8)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()


def save_gif(observations, path, fps=10, title=None):
    """Write one episode, given as its observations [(N, 6N) per step], as an animated GIF at `path`.

    The view is fixed over the episode (it covers every entity at every step), so motion is visible;
    mpe2 instead re-centres its camera each frame."""
    worlds = [world_from_obs(obs) for obs in observations]
    extent = max(1.0, max(np.abs(np.concatenate([w["agent_pos"], w["landmark_pos"]])).max() for w in worlds))
    extent += AGENT_RADIUS + 0.05
    frames = [
        Image.fromarray(draw_frame(w, extent, title=f"{title}  t={t}" if title else f"t={t}"))
        for t, w in enumerate(worlds)
    ]
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=int(1000 / fps), loop=0)
    return path
