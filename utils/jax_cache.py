"""What the JAX-backed wrappers share (`utils/smax.py`, `utils/jumanji.py`): JAX on the CPU and its persistent
compilation cache, set up once per process.

- JAX runs on the CPU (`JAX_PLATFORMS=cpu` unless the caller set it): the networks are torch's.
- The persistent compilation cache (default `~/.cache/magpo_jax`, or `$XDG_CACHE_HOME/magpo_jax`; the
  `MAGPO_JAX_CACHE_DIR` environment variable or `cache_dir=` overrides it, an empty string turns it off)
  turns the seconds-long first compile of an environment's jitted functions into a load in later processes.
  JAX initialises its cache once, so the first call of `import_jax` in a process decides the directory.
"""

import os

CACHE_ENV_VAR = "MAGPO_JAX_CACHE_DIR"
MIN_CACHED_COMPILE_SECS = 0.5  # cache every compile worth caching (JAX's default is 1 s)

_configured = {}


def default_cache_dir() -> str:
    """Where compiled programs are kept between processes: $MAGPO_JAX_CACHE_DIR if set (empty = no cache),
    else $XDG_CACHE_HOME/magpo_jax, else ~/.cache/magpo_jax."""
    if CACHE_ENV_VAR in os.environ:
        return os.environ[CACHE_ENV_VAR]
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "magpo_jax")


def import_jax(cache_dir: str | None = None):
    """Import jax on the CPU with the persistent cache configured; returns the `jax` module.

    `cache_dir` (None: `default_cache_dir()`) only takes effect on the first call in a process."""
    if "jax" in _configured:
        return _configured["jax"]
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    import jax

    cache_dir = default_cache_dir() if cache_dir is None else cache_dir
    if cache_dir:
        os.makedirs(cache_dir, exist_ok=True)
        jax.config.update("jax_compilation_cache_dir", cache_dir)
        jax.config.update("jax_persistent_cache_min_compile_time_secs", MIN_CACHED_COMPILE_SECS)
    _configured.update(jax=jax, cache_dir=cache_dir)
    return jax
