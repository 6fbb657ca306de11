"""POPGym's labyrinths (App. H.4), batched with gymnasium's vector API.

Each environment is the real ``popgym`` ``LabyrinthEscape`` / ``LabyrinthExplore`` (maze
6 × 6) wrapped as in the paper: previous action appended (``PreviousAction``), first-step
flag (``Antialias``), one-hot flattened (``Flatten``) — a 56-wide 0/1 observation. The
explore task also gets the reward rule of the paper's experiment code
(:class:`ExploreReward`).

POPGym seeds Python's and NumPy's *global* random generators inside ``reset(seed=...)``
(mazelib draws the maze from them). :class:`LabyrinthBatch` therefore resets every
environment with an explicit seed derived from (run seed, batch index, environment index)
and restores the caller's global generator states afterwards, so a run is reproducible and
the caller's global random streams are left as they were.

>>> envs = LabyrinthBatch("labyrinth_escape", num_envs=3)
>>> obs = envs.reset(seed=0, batch=0)
>>> obs.shape, envs.obs_dim, envs.n_actions, envs.episode_length
((3, 56), 56, 4, 80)
>>> bool((envs.reset(seed=0, batch=0) == obs).all())
True
"""

from __future__ import annotations

import random
import warnings
from collections.abc import Sequence

import gymnasium as gym
import numpy as np
from popgym.envs.labyrinth_escape import LabyrinthEscape
from popgym.envs.labyrinth_explore import LabyrinthExplore
from popgym.wrappers import Antialias, Flatten, PreviousAction

from sggraph.exceptions import ConfigError

__all__ = ["ENVIRONMENTS", "ExploreReward", "LabyrinthBatch", "batch_seeds", "make_labyrinth"]

#: environment name → default episode length (the paper's Table 3 / §H.4)
ENVIRONMENTS = {"labyrinth_escape": 80, "labyrinth_explore": 40}


class ExploreReward(gym.Wrapper):
    """The explore reward rule: with probability ``drop_prob`` a step's reward is replaced by
    ``−1/episode_length``; ``+success_bonus`` when the maze is fully explored (terminated).

    POPGym's own explore reward is ``1/free squares`` for a new square and ``−1/episode_length``
    otherwise; this wrapper keeps the new-square bonus with probability ``1 − drop_prob``.
    Its coin flips come from its own generator, seeded by ``reset(seed=...)``.
    """

    def __init__(self, env: gym.Env, drop_prob: float = 0.75, success_bonus: float = 1.0) -> None:
        super().__init__(env)
        self.drop_prob, self.success_bonus = drop_prob, success_bonus
        self._rng = np.random.default_rng(0)

    def reset(self, *, seed=None, options=None):
        if seed is not None:
            self._rng = np.random.default_rng([int(seed), 0x5EED])
        return self.env.reset(seed=seed, options=options)

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        if self._rng.random() < self.drop_prob:
            reward = -1.0 / self.env.unwrapped.max_episode_length
        if terminated:
            reward += self.success_bonus
        return obs, reward, terminated, truncated, info


def make_labyrinth(name: str, maze_size: int = 6, episode_length: int | None = None,
                   explore_drop_prob: float = 0.75):
    """One wrapped labyrinth environment (observation ``[56]`` of 0/1, 4 actions).

    Parameters
    ----------
    name : str
        ``labyrinth_escape`` or ``labyrinth_explore``.
    maze_size : int
        Maze height and width in grid cells (even; the paper: 6).
    episode_length : int, optional
        Defaults to :data:`ENVIRONMENTS` ``[name]`` (80 / 40).
    explore_drop_prob : float
        :class:`ExploreReward`'s ``drop_prob`` (explore only).
    """
    classes = {"labyrinth_escape": LabyrinthEscape, "labyrinth_explore": LabyrinthExplore}
    if name not in classes:
        raise ConfigError(f"unknown environment '{name}'", fix=f"use one of {', '.join(sorted(classes))}")
    if maze_size < 2 or maze_size % 2:
        raise ConfigError(f"maze_size must be an even number >= 2 (got {maze_size})", fix="use e.g. 6")
    length = ENVIRONMENTS[name] if episode_length is None else int(episode_length)
    with warnings.catch_warnings():  # POPGym warns that mazes are weak memory benchmarks (README says so)
        warnings.simplefilter("ignore", DeprecationWarning)
        env = classes[name](maze_dims=(maze_size, maze_size), episode_length=length)
    env = Flatten(Antialias(PreviousAction(env)))
    if name == "labyrinth_explore":
        env = ExploreReward(env, drop_prob=explore_drop_prob)
    return env


def batch_seeds(seed: int, batch: int, num_envs: int) -> list[int]:
    """Reset seeds of the ``num_envs`` environments for batch ``batch`` of run ``seed``.

    >>> batch_seeds(0, 0, 2) == batch_seeds(0, 0, 2), batch_seeds(0, 0, 2) != batch_seeds(0, 1, 2)
    (True, True)
    """
    state = np.random.SeedSequence([int(seed), int(batch)]).generate_state(num_envs, dtype=np.uint32)
    return [int(s) for s in state]


class LabyrinthBatch:
    """``num_envs`` labyrinths in a gymnasium ``SyncVectorEnv``.

    :meth:`reset` starts a fresh episode in every environment (seeded by :func:`batch_seeds`);
    :meth:`step` steps all of them. Environments whose episode ended keep being stepped by the
    vector env (auto-reset); the caller masks those steps.

    Parameters
    ----------
    name, maze_size, episode_length, explore_drop_prob
        As for :func:`make_labyrinth`.
    num_envs : int
    """

    def __init__(self, name: str, num_envs: int = 20, maze_size: int = 6, episode_length: int | None = None,
                 explore_drop_prob: float = 0.75) -> None:
        if num_envs < 1:
            raise ConfigError(f"num_envs must be at least 1 (got {num_envs})", fix="use e.g. --num-envs 20")
        self.name, self.num_envs, self.maze_size = name, num_envs, maze_size
        self.episode_length = ENVIRONMENTS.get(name, 0) if episode_length is None else int(episode_length)
        make = lambda: make_labyrinth(name, maze_size, episode_length, explore_drop_prob)
        self.vector = gym.vector.SyncVectorEnv([make] * num_envs)  # make() validates the settings
        self.obs_dim = int(np.prod(self.vector.single_observation_space.shape))
        self.n_actions = int(self.vector.single_action_space.n)

    def reset(self, seed: int, batch: int) -> np.ndarray:
        """New episodes; returns observations ``[num_envs, obs_dim]`` (float32)."""
        return self.reset_with(batch_seeds(seed, batch, self.num_envs))

    def reset_with(self, seeds: Sequence[int]) -> np.ndarray:
        py_state, np_state = random.getstate(), np.random.get_state()
        try:
            obs, _ = self.vector.reset(seed=list(seeds))
        finally:
            random.setstate(py_state)
            np.random.set_state(np_state)
        return obs.astype(np.float32)

    def step(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """``actions [num_envs]`` → ``obs [num_envs, obs_dim]``, ``reward``, ``terminated``, ``truncated``."""
        obs, reward, terminated, truncated, _ = self.vector.step(np.asarray(actions))
        return obs.astype(np.float32), reward.astype(np.float32), terminated, truncated

    def close(self) -> None:
        self.vector.close()

    def __repr__(self) -> str:
        return (f"LabyrinthBatch({self.name!r}, num_envs={self.num_envs}, maze={self.maze_size}x{self.maze_size}, "
                f"episode_length={self.episode_length})")
