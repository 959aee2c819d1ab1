"""Checks of the GIF renderer (`utils/render.py`) on hand-made simple_spread episodes: one fixed view for every
frame of every file, the title above the arena, and agents that leave the arena clipped at its border."""

import numpy as np
from PIL import Image, ImageSequence

from utils.render import ARENA_EXTENT, TITLE_HEIGHT, save_gif, world_from_obs

SIZE = 320  # save_gif's frame size
LANDMARKS = np.array([[1.0, 1.0], [-1.0, -1.0], [1.5, -1.5]])
START = np.array([[-0.5, 0.5], [0.5, -0.5], [0.0, 0.0]])
CALM = [START, START + 0.1, START + 0.2, START + 0.3]  # stays well inside [-1, 1]^2
WILD = [
    START,
    START * 2,
    np.array([[0.0, 1.5], [-1.8, 0.0], [0.0, 2.5]]),
    np.array([[0.0, 1.95], [-2.1, 0.0], [0.0, 3.0]]),
]  # touches the top, crosses the left border, leaves


def observations(agent_path):
    """simple_spread observations (N, 6N) per step, [vel, pos, landmarks - pos, zeros], for agents at
    `agent_path[t]` (N, 2) and the fixed LANDMARKS."""
    episode = []
    for agents in agent_path:
        n = len(agents)
        obs = np.zeros((n, 6 * n))
        obs[:, 2:4] = agents
        obs[:, 4 : 4 + 2 * n] = (LANDMARKS[None] - agents[:, None]).reshape(n, -1)
        episode.append(obs)
    return episode


def frames(path):
    return [np.asarray(frame.convert("RGB")).astype(int) for frame in ImageSequence.Iterator(Image.open(path))]


def agent_coloured(pixels):
    """Where a pixel is the agents' blue (blended or not): blue well above red and green."""
    r, g, b = pixels[..., 0], pixels[..., 1], pixels[..., 2]
    return (b > r + 60) & (b > g + 60)


def test_every_frame_of_every_gif_has_the_same_view_and_a_clear_title(tmp_path):
    np.testing.assert_allclose(world_from_obs(observations(WILD)[-1])["agent_pos"], WILD[-1])
    calm = frames(save_gif(observations(CALM), str(tmp_path / "calm.gif"), title="episode"))
    wild = frames(save_gif(observations(WILD), str(tmp_path / "wild.gif"), title="episode"))
    assert len(calm) == len(wild) == 4
    assert all(frame.shape == (SIZE, SIZE, 3) for frame in calm + wild)
    # the same first world and title draw the same picture in both files: the wild episode does not zoom out
    assert np.array_equal(calm[0], wild[0])
    # the view is [-ARENA_EXTENT, ARENA_EXTENT]^2 in the square below the title: landmark (1, 1) at 3/4, 1/4 of it
    side = SIZE - TITLE_HEIGHT
    col, row = (SIZE - side) // 2 + round(side * 0.75), TITLE_HEIGHT + round(side * 0.25)
    assert ARENA_EXTENT == 2.0
    for frame in calm + wild:
        assert (frame[row, col] < 100).all() and np.ptp(frame[row, col]) < 20  # the landmarks' dark grey
        title_band = frame[:TITLE_HEIGHT]
        assert not agent_coloured(title_band).any()  # no agent over the title, even at (0, 1.95) or (0, 3)
        assert (title_band.max(axis=-1) < 128).any()  # and the title is there
        margins = np.concatenate([frame[:, : (SIZE - side) // 2 - 1], frame[:, (SIZE + side) // 2 + 1 :]], axis=1)
        assert not agent_coloured(margins).any()  # agent 1 at x = -2.1 is clipped at the left border
    assert agent_coloured(wild[-1][TITLE_HEIGHT : TITLE_HEIGHT + 8, SIZE // 2 - 5 : SIZE // 2 + 5]).any()  # (0, 1.95)
