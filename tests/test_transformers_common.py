"""transformers' own common tests (`ModelTesterMixin`, `ConfigTester`) against our classifiers.

The tests are not copied into this repo: they are taken at test time from the source distribution of the
installed transformers version on PyPI, which ships `tests/test_modeling_common.py` and
`tests/test_configuration_common.py` (downloaded once into `~/.cache/spm_hf/transformers-sdist/<version>`,
or `$SPM_HF_TEST_CACHE/transformers-sdist/<version>`). Without network access and without that cache the
module is skipped, saying so.

The sdist does not ship three modules those two files import, so `_STAND_INS` provides them:
`exporters/test_export.py` (`ExportTesterMixin`, the export tests' base: empty here, so no export test
runs), `generation/test_utils.py` (`GenerationTesterMixin`, only used in an `issubclass` check: our models do
not generate) and `utils/test_configuration_utils.py` (`config_common_kwargs`: every common
`PreTrainedConfig` field with a non-default value). `parameterized`, which the modeling tests import, is
taken the same way (its wheel on `sys.path`) when it is not installed.

`SPMModelCommonTest` runs every test of `ModelTesterMixin` on the SPM (`class_mean` mode) and the parametric
baseline, `SPMKnnModelCommonTest` again on the SPM in `knn` mode (a few seconds in all, once cached), and
`test_config` runs `ConfigTester.run_common_tests` on `SPMConfig`. Where a test assumes
token models or transformers' loss heads it is adapted below, saying why (hidden states, problem types,
mismatched shapes); the two skipped here name why they cannot apply (no input embeddings). The other skips
are transformers' own, each with its reason: no attention (eager/SDPA/flash/flex comparisons), no
accelerator / deepspeed / kernels here, no base model class (RoPE, `torch_save_load`), no weight-name
conversion, no MoE, no `_keep_in_fp32_modules`, slow (`torch_compile_for_training`).
"""

import glob
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import unittest
import unittest.mock
import warnings
from pathlib import Path

import pytest
import torch
import transformers

from spm_hf import MemoryShapeError, SampleMemory, SPMConfig, SPMForImageClassification
from spm_hf.baselines.parametric import ParametricForImageClassification


TRANSFORMERS_VERSION = transformers.__version__
PARAMETERIZED_VERSION = "0.9.0"
CACHE = Path(os.environ.get("SPM_HF_TEST_CACHE", Path.home() / ".cache" / "spm_hf")) / "transformers-sdist"
PACKAGE = "transformers_sdist_tests"  # the sdist's tests/ folder, importable under this name
COMMON_FILES = ("test_modeling_common.py", "test_configuration_common.py")

_STAND_INS = {
    "__init__.py": "",
    "exporters/__init__.py": "",
    "exporters/test_export.py": (
        '"""Stand-in (spm_hf): the sdist lacks tests/exporters; no export test runs."""\n\n\n'
        "class ExportTesterMixin:\n    pass\n"
    ),
    "generation/__init__.py": "",
    "generation/test_utils.py": (
        '"""Stand-in (spm_hf): the sdist lacks tests/generation; SPMs do not generate."""\n\n\n'
        "class GenerationTesterMixin:\n    pass\n"
    ),
    "utils/__init__.py": "",
    "utils/test_configuration_utils.py": (
        '"""Stand-in (spm_hf): the sdist lacks tests/utils. Every field of PreTrainedConfig with a value other\n'
        "than its default; problem_type takes the one other value SPMConfig accepts (it refuses regression\n"
        'and multi-label classification by design)."""\n\n'
        "config_common_kwargs = {\n"
        '    "return_dict": False,\n'
        '    "output_hidden_states": True,\n'
        '    "dtype": "float16",\n'
        '    "chunk_size_feed_forward": 5,\n'
        '    "architectures": ["SPMForImageClassification"],\n'
        '    "id2label": {0: "a", 1: "b"},\n'
        '    "label2id": {"a": 0, "b": 1},\n'
        '    "problem_type": "single_label_classification",\n'
        "}\n"
    ),
}


def _pip_download(requirement: str, destination: Path, *options: str) -> None:
    destination.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "pip", "download", "--no-deps", *options, requirement, "-d", str(destination),
               "--disable-pip-version-check", "--quiet"]
    try:
        run = subprocess.run(command, capture_output=True, text=True, timeout=300)
    except subprocess.TimeoutExpired:
        _skip_or_fail(f"`pip download {requirement}` did not finish in 300 s (no network?)")
    if run.returncode != 0:
        _skip_or_fail(f"cannot download {requirement} from the package registry (no network?): "
                      f"{run.stderr.strip()[-500:]}")


def _skip_or_fail(reason: str) -> None:
    """Without the registry these tests cannot run: a skip on a developer's offline machine, a failure where
    they are required (`.ci/run` sets SPM_HF_REQUIRE_COMMON_TESTS=1), so CI never passes without them."""
    if os.environ.get("SPM_HF_REQUIRE_COMMON_TESTS") == "1":
        pytest.fail(f"SPM_HF_REQUIRE_COMMON_TESTS=1 but {reason}", pytrace=False)
    pytest.skip(reason, allow_module_level=True)


def common_tests_root() -> Path:
    """The folder holding `transformers_sdist_tests/` (the pinned sdist's common tests and the stand-ins),
    fetched and unpacked on first use."""
    root = CACHE / TRANSFORMERS_VERSION
    package = root / PACKAGE
    if all((package / name).is_file() for name in (*COMMON_FILES, *_STAND_INS)):
        return root
    download = root / "download"
    archives = glob.glob(str(download / f"transformers-{TRANSFORMERS_VERSION}.tar.gz"))
    if not archives:
        # the source distribution: the wheel has no tests/
        _pip_download(f"transformers=={TRANSFORMERS_VERSION}", download, "--no-binary", ":all:")
        archives = glob.glob(str(download / f"transformers-{TRANSFORMERS_VERSION}.tar.gz"))
    staging = Path(tempfile.mkdtemp(prefix=".unpack-", dir=root))
    with tarfile.open(archives[0]) as archive:
        for name in COMMON_FILES:
            member = archive.getmember(f"transformers-{TRANSFORMERS_VERSION}/tests/{name}")
            (staging / name).write_bytes(archive.extractfile(member).read())
    for name, text in _STAND_INS.items():
        (staging / name).parent.mkdir(parents=True, exist_ok=True)
        (staging / name).write_text(text)
    if package.exists():  # an incomplete earlier unpack
        shutil.rmtree(package, ignore_errors=True)
    try:
        os.replace(staging, package)
    except OSError:  # another test process unpacked it meanwhile
        shutil.rmtree(staging, ignore_errors=True)
    return root


def _put_parameterized_on_path() -> None:
    try:
        import parameterized  # noqa: F401
    except ImportError:
        wheels = CACHE / "wheels"
        wheel = wheels / f"parameterized-{PARAMETERIZED_VERSION}-py2.py3-none-any.whl"
        if not wheel.is_file():
            _pip_download(f"parameterized=={PARAMETERIZED_VERSION}", wheels, "--only-binary", ":all:")
        sys.path.append(str(wheel))  # a pure-Python wheel imports as a zip


sys.path.insert(0, str(common_tests_root()))
_put_parameterized_on_path()

from transformers.testing_utils import torch_device  # noqa: E402
from transformers_sdist_tests.test_configuration_common import ConfigTester  # noqa: E402

with warnings.catch_warnings():
    # marks such as `flash_attn_test` are registered by transformers' own conftest, which the sdist lacks
    warnings.simplefilter("ignore", pytest.PytestUnknownMarkWarning)
    from transformers_sdist_tests import test_modeling_common  # noqa: E402
from transformers_sdist_tests.test_modeling_common import ModelTesterMixin, floats_tensor, ids_tensor  # noqa: E402


# ---------------------------------------------------------------------- the models under test
def seeded_memory(config: SPMConfig, size: int = 12) -> SampleMemory:
    """A memory that depends on the config only, so that two models built from one config agree."""
    generator = torch.Generator().manual_seed(0)
    names = [config.id2label[i] for i in range(config.num_labels)]
    memory = SampleMemory(names, (config.embed_dim,))
    values = torch.randn(size, config.embed_dim, generator=generator, device="cpu")
    memory.add([f"train/{i:05d}" for i in range(size)], torch.arange(size) % config.num_labels, values)
    return memory


class SPMForImageClassificationWithMemory(SPMForImageClassification):
    """`SPMForImageClassification` with a memory from the moment it is built: the common tests build models
    from a config alone (`model_class(config)`) and call them, and an SPM predicts only with a memory."""

    _auto_class = None  # save no remote code for this test class

    def __init__(self, config: SPMConfig):
        super().__init__(config)
        with torch.device("cpu"):  # the tests build some models under `torch.device("meta")`
            self.memory = seeded_memory(config)


class SPMModelTester:
    def __init__(self, parent, batch_size=3, num_channels=3, image_size=8, num_labels=3, is_training=True,
                 memory_mode="class_mean"):
        self.parent, self.memory_mode = parent, memory_mode
        # 9 of the memory's 12 rows (4 per class): every neighbourhood holds every class. transformers' tests
        # reject -inf in outputs, which an SPM gives, by design, to a class with no prototype (probability 0)
        self.knn_k = 9
        self.batch_size, self.num_channels, self.image_size = batch_size, num_channels, image_size
        self.num_labels, self.is_training = num_labels, is_training
        self.encoder_depths, self.encoder_widths = [1, 1], [4, 8]
        self.hidden_size = self.encoder_widths[-1]
        self.num_hidden_layers = len(self.encoder_depths)
        self.expected_num_hidden_layers = 1  # hidden_states holds the pooled embeddings only

    def get_config(self) -> SPMConfig:
        return SPMConfig(
            encoder="custom",
            encoder_depths=self.encoder_depths,
            encoder_widths=self.encoder_widths,
            num_channels=self.num_channels,
            image_size=self.image_size,
            num_labels=self.num_labels,
            memory_mode=self.memory_mode,
            knn_k=self.knn_k,
        )

    def prepare_config_and_inputs(self):
        pixel_values = floats_tensor([self.batch_size, self.num_channels, self.image_size, self.image_size])
        labels = ids_tensor([self.batch_size], self.num_labels)
        return self.get_config(), pixel_values, labels

    def prepare_config_and_inputs_for_common(self):
        config, pixel_values, _ = self.prepare_config_and_inputs()
        return config, {"pixel_values": pixel_values}


@pytest.mark.usefixtures("one_torch_thread")
class SPMModelCommonTest(ModelTesterMixin, unittest.TestCase):
    all_model_classes = (SPMForImageClassificationWithMemory, ParametricForImageClassification)
    pipeline_model_mapping = {}
    has_attentions = False  # convolutional encoder, no attention
    test_resize_embeddings = False  # no input embeddings: images, not tokens
    # a model of 2026: `_init_weights` must cover every weight (the check is opt-in for older models)
    test_can_init_all_missing_weights_before_2023 = True

    memory_mode = "class_mean"

    def setUp(self):
        # The common tests know image classifiers by the class names of transformers' Auto mapping (labels for
        # the loss, the problem-type and mismatched-shape tests); ours are registered at import time, which
        # those name lists do not see. Listed there for the duration of each test.
        names = {"spm": SPMForImageClassificationWithMemory.__name__,
                 "spm-parametric": ParametricForImageClassification.__name__}
        listed = unittest.mock.patch.dict(test_modeling_common.MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES, names)
        listed.start()
        self.addCleanup(listed.stop)
        self.model_tester = SPMModelTester(self, memory_mode=self.memory_mode)
        self.config_tester = ConfigTester(
            self,
            config_class=SPMConfig,
            has_text_modality=False,
            common_properties=["num_channels", "image_size", "embed_dim", "num_labels"],
            encoder="resnet-tiny",
            num_channels=1,
            image_size=8,
        )

    def test_config(self):
        self.config_tester.run_common_tests()

    def test_hidden_states_output(self):
        """transformers' version checks per-layer (batch, seq_length, hidden_size) token states; an SPM's
        `hidden_states` is the one (batch, embed_dim) embedding the memory is compared with. Same two ways
        of asking (argument and config) as the original."""
        config, inputs_dict = self.model_tester.prepare_config_and_inputs_for_common()
        for model_class in self.all_model_classes:
            for through_config in (False, True):
                model_config = self.model_tester.get_config()
                model_config.output_hidden_states = through_config
                model = model_class(model_config).to(torch_device).eval()
                inputs = dict(inputs_dict) if through_config else {**inputs_dict, "output_hidden_states": True}
                with torch.no_grad():
                    outputs = model(**inputs)
                self.assertEqual(len(outputs.hidden_states), self.model_tester.expected_num_hidden_layers)
                self.assertEqual(list(outputs.hidden_states[0].shape),
                                 [self.model_tester.batch_size, self.model_tester.hidden_size])

    @unittest.skip(reason="no input embeddings: the inputs are images fed to a convolution, not token ids")
    def test_model_get_set_embeddings(self):
        pass

    @unittest.skip(reason="no input embeddings to require gradients for (images, not token ids), and no "
                          "gradient checkpointing")
    def test_enable_input_require_grads_with_gradient_checkpointing(self):
        pass

    def test_problem_types(self):
        """transformers' version trains each class under every problem type; SPMs (and the parametric baseline,
        which shares SPMConfig) support single-label classification only and refuse the others by design, by
        name, before any computation. Same configs and inputs as the original."""
        config, inputs_dict = self.model_tester.prepare_config_and_inputs_for_common()
        for model_class in self.all_model_classes:
            model = model_class(config).to(torch_device).train()
            inputs = self._prepare_for_class(inputs_dict, model_class, return_labels=True)
            for refused, labels in (("multi_label_classification", inputs["labels"][:, None].repeat(1, 2).float()),
                                    ("regression", inputs["labels"].float())):
                model.config.problem_type = refused
                with self.assertRaisesRegex(ValueError, f"problem_type.*{refused}"):
                    model(**{**inputs, "labels": labels})
            model.config.problem_type = "single_label_classification"
            loss = model(**inputs).loss
            self.assertTrue(torch.isfinite(loss))
            loss.backward()

    def test_can_load_ignoring_mismatched_shapes(self):
        """The original, for the parametric baseline (its linear head is the class-sized weight). An SPM has no
        class-sized weight: its classes are its memory's, so loading with another `num_labels` is refused by
        the memory, `ignore_mismatched_sizes` or not, with an error naming both class lists."""
        classes = self.all_model_classes
        spm_class = classes[0]
        self.all_model_classes = tuple(c for c in classes if c is not spm_class)
        try:
            if self.all_model_classes:
                super().test_can_load_ignoring_mismatched_shapes()
        finally:
            self.all_model_classes = classes
        config, _ = self.model_tester.prepare_config_and_inputs_for_common()
        with tempfile.TemporaryDirectory() as folder:
            spm_class(config).save_pretrained(folder)
            for ignore in (False, True):
                with self.assertRaisesRegex(MemoryShapeError, "memory classes .* differ from the model's"):
                    spm_class.from_pretrained(folder, num_labels=42, ignore_mismatched_sizes=ignore)


class SPMKnnModelCommonTest(SPMModelCommonTest):
    """The same tests in `knn` mode (SPM-R): each query reads its own neighbourhood of the memory, and the
    output gains `neighbor_keys`. The parametric baseline has no memory mode, so it runs once, above."""

    all_model_classes = (SPMForImageClassificationWithMemory,)
    memory_mode = "knn"
