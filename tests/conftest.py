import os

# Nothing in the suite may reach the network: the Hub is unreachable from CI machines.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Ledger keys (spm_hf.ledger) of the suite live in a throw-away folder, never in the user's config dir;
# subprocesses inherit it, so a model saved by one test process is provable by another.
if "SPM_HF_KEY_DIR" not in os.environ:
    import tempfile

    os.environ["SPM_HF_KEY_DIR"] = tempfile.mkdtemp(prefix="spm-hf-test-keys-")

import pytest  # noqa: E402
import torch  # noqa: E402

from spm_hf import SampleMemory, SPMConfig, SPMForImageClassification  # noqa: E402


CLASSES = ["airplane", "automobile", "bird", "cat", "deer"]

# Prepended to a subprocess script: spm_hf cannot be imported there, as on a machine without it (the
# remote-code tests load saved folders with transformers / diffusers alone).
HIDE_SPM_HF = """import importlib.abc, sys
class _HideSpmHf(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "spm_hf" or name.startswith("spm_hf."):
            raise ImportError("spm_hf is hidden in this process")
sys.meta_path.insert(0, _HideSpmHf())
"""


def make_config(**overrides) -> SPMConfig:
    kwargs = dict(
        encoder="resnet-tiny",
        id2label=dict(enumerate(CLASSES)),
        label2id={n: i for i, n in enumerate(CLASSES)},
    )
    kwargs.update(overrides)
    return SPMConfig(**kwargs)


def make_memory(n: int = 60, dim: int = 16, seed: int = 0, trained_on=True) -> SampleMemory:
    g = torch.Generator().manual_seed(seed)
    memory = SampleMemory(CLASSES, (dim,))
    memory.add(
        [f"train/{i:05d}" for i in range(n)],
        torch.arange(n) % len(CLASSES),
        torch.randn(n, dim, generator=g),
        trained_on=trained_on,
    )
    return memory


@pytest.fixture
def memory() -> SampleMemory:
    return make_memory()


@pytest.fixture
def model() -> SPMForImageClassification:
    return make_model()


def make_model() -> SPMForImageClassification:
    """The tiny classifier of the `model` fixture (seed 0, `make_memory()` attached), in eval mode."""
    torch.manual_seed(0)
    m = SPMForImageClassification(make_config()).eval()
    m.set_memory(make_memory())
    return m


@pytest.fixture
def images() -> torch.Tensor:
    return torch.randn(6, 3, 32, 32, generator=torch.Generator().manual_seed(1))


@pytest.fixture(scope="module")
def one_torch_thread():
    """One intra-op torch thread for a module (tiny tensors gain nothing from more, and OpenMP barriers
    stall on a busy 2-core machine); restored after the module. Use with `pytest.mark.usefixtures`."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
