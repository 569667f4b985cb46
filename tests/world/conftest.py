import pytest

from dct.world.paths import default_world_dir


@pytest.fixture(scope="session")
def world_dir():
    world = default_world_dir()
    if not (world / "world.json").is_file():
        pytest.skip(f"no built world at {world} (run `dct world build`)")
    return world
