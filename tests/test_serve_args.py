import json

from swift_vllm.cli import build_parser
from swift_vllm.commands.serve import build_vllm_argv


def _argv(*cli):
    args, unknown = build_parser().parse_known_args(["serve", *cli])
    args.passthrough = unknown
    return build_vllm_argv(args)


def test_speculative_model_alias_maps_to_speculative_config():
    argv = _argv("MODEL", "--speculative-model", "[self-skip]", "--port", "8001")
    assert argv[:4] == ["serve", "MODEL", "--port", "8001"]
    spec = json.loads(argv[argv.index("--speculative-config") + 1])
    assert spec == {"method": "self-skip", "num_speculative_tokens": 4}


def test_options_merge():
    argv = _argv(
        "MODEL",
        "--speculative-model",
        "[self-skip]",
        "--num-speculative-tokens",
        "6",
        "--speculative-config",
        '{"skip_ratio": 0.2}',
    )
    spec = json.loads(argv[argv.index("--speculative-config") + 1])
    assert spec == {"method": "self-skip", "num_speculative_tokens": 6, "skip_ratio": 0.2}


def test_vllm_flags_anywhere_pass_through():
    argv = _argv("MODEL", "--port", "1", "--speculative-model", "[self-skip]", "--dtype", "float32")
    assert argv[:6] == ["serve", "MODEL", "--port", "1", "--dtype", "float32"]
    assert json.loads(argv[-1])["method"] == "self-skip"


def test_plain_serve_untouched():
    assert _argv("MODEL", "--port", "9") == ["serve", "MODEL", "--port", "9"]
