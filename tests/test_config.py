"""Option validation, both on the dataclass and through vLLM's real config path."""

import pytest

from swift_vllm.config import SelfSkipConfig


@pytest.mark.parametrize(
    ("options", "k", "message"),
    [
        ({"skip_ratio": 1.0}, 4, "skip_ratio"),
        ({"skip_ratio": -0.1}, 4, "skip_ratio"),
        ({"attention_skip": [0]}, 4, "attention_skip"),
        ({"mlp_skip": [29]}, 4, "mlp_skip"),
        ({"mlp_skip": [30]}, 4, "mlp_skip"),
        ({"stop_threshold": 1.5}, 4, "stop_threshold"),
        ({"max_draft_len": 5}, 4, "max_draft_len"),
        ({}, 0, "num_speculative_tokens"),
    ],
)
def test_validate_names_the_bad_option(options, k, message):
    with pytest.raises(ValueError, match=message):
        SelfSkipConfig.from_dict(options).validate(num_layers=30, num_speculative_tokens=k)


def test_unknown_key_is_named():
    with pytest.raises(ValueError, match="skip_ratoi"):
        SelfSkipConfig.from_dict({"skip_ratoi": 0.2})


def test_valid_options_round_trip():
    config = SelfSkipConfig.from_dict({"mlp_skip": [3, 4], "stop_threshold": 0.6})
    config.validate(num_layers=30, num_speculative_tokens=4)
    assert SelfSkipConfig.from_dict(config.to_dict()) == config


def _engine_config(model: str, speculative_config: dict, **kwargs):
    from vllm.engine.arg_utils import EngineArgs

    import swift_vllm.plugin

    swift_vllm.plugin.register()
    args = EngineArgs(model=model, speculative_config=speculative_config, dtype="float32", **kwargs)
    return args.create_engine_config()


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"method": "self-skip", "num_speculative_tokens": 4, "bogus": 1}, "bogus"),
        ({"method": "self-skip", "num_speculative_tokens": 4, "skip_ratio": 1.2}, "skip_ratio"),
        ({"method": "self-skip", "num_speculative_tokens": 4, "mlp_skip": [40]}, "mlp_skip"),
        ({"method": "self-skip", "num_speculative_tokens": 0}, "num_speculative_tokens"),
        ({"method": "self-skip"}, "num_speculative_tokens"),
    ],
)
def test_bad_options_fail_at_startup(smollm2, spec, message):
    with pytest.raises(ValueError, match=message):
        _engine_config(smollm2, spec)


@pytest.mark.parametrize(
    "spec",
    [
        {"method": "self-skip", "num_speculative_tokens": 3, "skip_ratio": 0.2},
        {"model": "[self-skip]", "num_speculative_tokens": 3, "skip_ratio": 0.2},
        {"method": "[self-skip]", "num_speculative_tokens": 3, "skip_ratio": 0.2},
    ],
)
def test_method_and_alias_map_to_the_proposer(smollm2, spec):
    from swift_vllm.vllm_compat import is_self_skip, self_skip_options

    config = _engine_config(smollm2, spec)
    assert is_self_skip(config)
    assert self_skip_options(config).skip_ratio == 0.2
    # KV slots for the drafts are reserved by the scheduler.
    assert config.num_lookahead_tokens == 3


def test_unsupported_architecture_fails_at_startup(tmp_path, smollm2):
    import json
    import shutil

    model = tmp_path / "gpt2ish"
    shutil.copytree(smollm2, model, ignore=shutil.ignore_patterns("*.safetensors"))
    config = json.loads((model / "config.json").read_text())
    config["architectures"] = ["GPT2LMHeadModel"]
    config["model_type"] = "gpt2"
    config.update(n_embd=576, n_layer=30, n_head=9, n_positions=2048)
    (model / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="does not support architecture.*LlamaForCausalLM"):
        _engine_config(str(model), {"method": "self-skip", "num_speculative_tokens": 2})
