"""Benchmark reports: aggregation of timed runs, the speed report, method table,
answer files, plots and the command lines of the online benchmark. Synthetic
records, except one small real `swift-vllm bench` run (integration)."""

import json
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from swift_vllm.bench.methods import (
    METHODS,
    fixed_set_config,
    notes,
    parse_labels,
    speculative_configs,
)
from swift_vllm.bench.offline import (
    MethodRun,
    Workload,
    engine_overrides,
    select_questions,
    write_answers,
)
from swift_vllm.bench.online import (
    ServeWorkload,
    add_speedups,
    bench_command,
    row_of,
    server,
    server_args,
    server_command,
)
from swift_vllm.bench.plots import write_plots
from swift_vllm.bench.records import GroupRun, RequestResult
from swift_vllm.bench.report import (
    ALL,
    category_table,
    format_table,
    overall_table,
    source_table,
    summarize,
)
from swift_vllm.bench.speed import load_answers, speed_report
from swift_vllm.cli import build_parser
from swift_vllm.config import SelfSkipConfig
from swift_vllm.engine import parse_engine_args
from swift_vllm.stats import DraftStats


def _plain(qid, category, tokens):
    return RequestResult(qid, category, tokens)


def _spec(qid, category, tokens, drafts, draft_tokens, accepted):
    return RequestResult(qid, category, tokens, drafts, draft_tokens, accepted)


@pytest.fixture
def groups() -> list[GroupRun]:
    """Two prompts (qa, rag) at batch 1 and 2, two repeats; self-skip twice as fast."""
    runs = []
    for repeat, jitter in ((0, 1.0), (1, 1.5)):  # repeat 1 slower: medians pick between
        runs += [
            GroupRun("vanilla", 1, repeat, 2.0 * jitter, (_plain(1, "qa", 20),)),
            GroupRun("vanilla", 1, repeat, 2.0 * jitter, (_plain(2, "rag", 20),)),
            GroupRun(
                "vanilla", 2, repeat, 3.0 * jitter, (_plain(1, "qa", 20), _plain(2, "rag", 40))
            ),
            GroupRun("self-skip", 1, repeat, 1.0 * jitter, (_spec(1, "qa", 20, 5, 15, 10),)),
            GroupRun("self-skip", 1, repeat, 1.0 * jitter, (_spec(2, "rag", 20, 5, 10, 5),)),
            GroupRun(
                "self-skip",
                2,
                repeat,
                1.5 * jitter,
                (_spec(1, "qa", 20, 4, 8, 8), _spec(2, "rag", 40, 4, 8, 0)),
            ),
        ]
    return runs


def _row(rows, method, batch_size, category=ALL):
    (row,) = [
        r
        for r in rows
        if (r["method"], r["batch_size"], r["category"]) == (method, batch_size, category)
    ]
    return row


def test_summary_medians_speedups_and_acceptance(groups):
    rows = summarize(groups)
    vanilla = _row(rows, "vanilla", 1)
    # per repeat: 40 tokens in 4 s and in 6 s -> median of 10 and 6.67 tok/s
    assert vanilla["output_tokens_per_s"] == pytest.approx((10 + 40 / 6) / 2)
    assert vanilla["wall_time_s"] == pytest.approx(5.0)
    assert vanilla["num_requests"] == 2
    assert "acceptance_rate" not in vanilla
    skip = _row(rows, "self-skip", 1)
    assert skip["speedup"] == pytest.approx(2.0)
    # counts summed over both repeats: accepted 30 of 50 drafted, in 20 drafts
    assert skip["acceptance_rate"] == pytest.approx(0.6)
    assert skip["mean_accepted_length"] == pytest.approx(1 + 30 / 20)
    assert skip["mean_draft_length"] == pytest.approx(50 / 20)
    qa = _row(rows, "self-skip", 1, "qa")
    assert qa["acceptance_rate"] == pytest.approx(10 / 15)
    assert qa["speedup"] == pytest.approx(2.0)


def test_speedups_are_paired_by_repeat():
    """The machine slows down in repeat 1 for vanilla only in time: paired
    ratios see self-skip 1.2x in every repeat, a ratio of medians would not."""
    runs = []
    for repeat, (plain_s, skip_s) in enumerate(((2.0, 1.0), (0.5, 1.1), (1.0, 2.0 / 1.2 / 2))):
        runs.append(GroupRun("vanilla", 1, repeat, plain_s, (_plain(1, "qa", 20),)))
        runs.append(GroupRun("self-skip", 1, repeat, skip_s, (_spec(1, "qa", 20, 5, 15, 10),)))
    rows = summarize(runs)
    # per repeat: 2.0x, 0.45x, 1.2x -> median 1.2; the medians of the rates: 20 / 20
    skip = _row(rows, "self-skip", 1)
    assert skip["speedup"] == pytest.approx(1.2)
    assert skip["speedup_range"] == pytest.approx([20 / 1.1 / 40, 2.0])
    assert "0.45-2.00" in overall_table(rows)


def test_mixed_group_time_is_split_by_token_share(groups):
    rows = summarize(groups)
    # batch 2, repeat 0: 3 s for 20 qa + 40 rag tokens -> qa gets 1 s, rag 2 s
    qa = _row(rows, "vanilla", 2, "qa")
    assert qa["wall_time_s"] == pytest.approx((1.0 + 1.5) / 2)
    assert qa["output_tokens_per_s"] == _row(rows, "vanilla", 2, "rag")["output_tokens_per_s"]
    assert _row(rows, "self-skip", 2, "qa")["acceptance_rate"] == pytest.approx(1.0)
    assert _row(rows, "self-skip", 2, "rag")["acceptance_rate"] == 0.0


def test_rows_follow_method_order_with_all_first(groups):
    rows = summarize(groups)
    keys = [(r["method"], r["batch_size"], r["category"]) for r in rows]
    assert keys[:3] == [("vanilla", 1, ALL), ("vanilla", 1, "qa"), ("vanilla", 1, "rag")]
    assert keys[-3] == ("self-skip", 2, ALL)


def test_prediction_from_proposer_stats(groups):
    stats = DraftStats(
        drafts=10,
        draft_tokens=20,
        accepted_tokens=10,
        draft_steps=20,
        draft_seconds=2.0,
        verify_steps=10,
        verify_seconds=4.0,
    )
    row = _row(summarize(groups, {("self-skip", 1): stats}), "self-skip", 1)
    assert row["cost_ratio"] == pytest.approx(0.25)
    assert row["proposer"]["draft_seconds"] == 2.0
    # a = 0.5, g = 2, c = 0.25: (1 - 0.5^3) / (0.5 * 1.5)
    assert row["predicted_speedup"] == pytest.approx(0.875 / 0.75)
    assert "predicted_speedup" not in _row(summarize(groups), "self-skip", 1)


def test_draft_sources_per_category():
    """Proposer counters per call split the draft tokens by source; a mixed
    group's counts go to its requests by output-token share."""
    lookup_heavy = DraftStats(draft_tokens=10, accepted_tokens=8, lookup_draft_tokens=30)
    lookup_heavy.lookup_accepted_tokens = 15
    self_skip_only = DraftStats(draft_tokens=20, accepted_tokens=10)
    runs = [
        GroupRun("self-skip", 1, 0, 1.0, (_spec(1, "rag", 20, 5, 40, 23),), lookup_heavy),
        GroupRun("self-skip", 1, 0, 1.0, (_spec(2, "qa", 20, 5, 20, 10),), self_skip_only),
        GroupRun(
            "self-skip",
            2,
            0,
            1.0,
            (_spec(1, "rag", 30, 4, 8, 8), _spec(2, "qa", 10, 4, 8, 0)),
            DraftStats(draft_tokens=40, accepted_tokens=20),
        ),
    ]
    rows = summarize(runs)
    rag = _row(rows, "self-skip", 1, "rag")["draft_sources"]
    assert rag["lookup"] == {"draft_tokens": 30, "share": 0.75, "acceptance_rate": 0.5}
    assert rag["self-skip"]["acceptance_rate"] == pytest.approx(0.8)
    assert _row(rows, "self-skip", 1)["draft_sources"]["lookup"]["share"] == 0.5
    assert _row(rows, "self-skip", 2, "qa")["draft_sources"]["self-skip"]["draft_tokens"] == 10
    table = source_table(rows)
    assert "75% (0.50/0.80)" in table and "0% (-/0.50)" in table


def test_speedup_missing_without_vanilla(groups):
    rows = summarize([g for g in groups if g.method != "vanilla"])
    assert all(r["speedup"] is None for r in rows)


def test_tables_render_all_rows(groups):
    rows = summarize(groups)
    overall = overall_table(rows).splitlines()
    assert len(overall) == 2 + 4  # header, rule, 2 methods x 2 batch sizes
    assert overall[2].split()[:2] == ["vanilla", "1"]
    categories = category_table(rows).splitlines()
    assert categories[0].split() == ["category", "self-skip", "bs1", "self-skip", "bs2"]
    assert [line.split()[0] for line in categories[2:]] == [ALL, "qa", "rag"]
    assert format_table(["a", "b"], [[None, 1.234]]).splitlines()[2].split() == ["-", "1.23"]
    # Every method failed (e.g. out of memory): the headers, no crash.
    assert format_table(["method", "tok/s"], []).splitlines() == ["method  tok/s", "------  -----"]


def test_plots_are_written(groups, tmp_path):
    paths = write_plots(summarize(groups), tmp_path)
    assert [p.name for p in paths] == ["speedup_by_batch_size.png", "speedup_by_category.png"]
    assert all(p.read_bytes()[:4] == b"\x89PNG" for p in paths)
    # Every speculative engine failed (a Qwen engine beside another found no
    # memory): vanilla's rows alone still plot.
    vanilla = [r for r in summarize(groups) if r["method"] == "vanilla"]
    assert vanilla and all(p.exists() for p in write_plots(vanilla, tmp_path))


def test_answer_files_feed_the_speed_report(groups, tmp_path):
    written = write_answers(groups, tmp_path)
    assert sorted(p.name for p in written) == [
        "self-skip_bs1.jsonl",
        "self-skip_bs2.jsonl",
        "vanilla_bs1.jsonl",
        "vanilla_bs2.jsonl",
    ]
    lines = [json.loads(x) for x in (tmp_path / "vanilla_bs2.jsonl").read_text().splitlines()]
    assert len(lines) == 4  # two requests, two repeats
    assert lines[0] == {
        "method": "vanilla",
        "batch_size": 2,
        "repeat": 0,
        "wall_time": 3.0,
        "question_id": 1,
        "category": "qa",
        "output_tokens": 20,
    }
    rows = speed_report(
        load_answers(tmp_path / "self-skip_bs1.jsonl"), load_answers(tmp_path / "vanilla_bs1.jsonl")
    )
    overall = rows[-1]
    assert overall["task"] == "overall"
    assert overall["speedup"] == pytest.approx(2.0)
    assert overall["acceptance_rate"] == pytest.approx(0.6)


def _write_jsonl(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def test_speed_report_math(tmp_path):
    run = _write_jsonl(
        tmp_path / "run.jsonl",
        [
            # 11 tokens: 10 decoding steps' worth minus 6 accepted -> 4 steps
            {"category": "writing", "output_tokens": 11, "wall_time": 1.0, "drafts": 4,
             "draft_tokens": 8, "accepted_tokens": 6},
            {"category": "coding", "output_tokens": 21, "wall_time": 1.0, "drafts": 10,
             "draft_tokens": 10, "accepted_tokens": 0},
            {"category": "qa", "output_tokens": 30, "wall_time": 2.0, "drafts": 0,
             "draft_tokens": 0, "accepted_tokens": 0},
        ],
    )  # fmt: skip
    base = _write_jsonl(
        tmp_path / "base.jsonl",
        [
            {"category": "writing", "output_tokens": 11, "wall_time": 2.0},
            {"category": "coding", "output_tokens": 21, "wall_time": 2.0},
            {"category": "qa", "output_tokens": 30, "wall_time": 3.0},
        ],
    )
    rows = {r["task"]: r for r in speed_report(load_answers(run), load_answers(base))}
    assert list(rows) == ["mt_bench", "qa", "overall"]  # writing and coding are MT-bench
    mt = rows["mt_bench"]
    assert mt["requests"] == 2
    assert mt["tokens_per_s"] == pytest.approx(16.0)
    assert mt["base_tokens_per_s"] == pytest.approx(8.0)
    assert mt["speedup"] == pytest.approx(2.0)
    assert mt["mean_accepted_tokens"] == pytest.approx((10 + 20) / (4 + 20))
    assert mt["acceptance_rate"] == pytest.approx(6 / 18)
    assert rows["qa"]["mean_accepted_tokens"] == 1.0
    assert rows["qa"]["acceptance_rate"] is None  # nothing drafted
    assert rows["overall"]["speedup"] == pytest.approx(mean_of(11, 21, 15) / mean_of(5.5, 10.5, 10))


def mean_of(*values: float) -> float:
    return sum(values) / len(values)


def test_speed_report_reads_reference_answer_files(tmp_path):
    """SWIFT / Spec-Bench answer lines: per-turn lists and per-step accept lengths."""
    choice = {"new_tokens": [12], "wall_time": [1.0], "accept_lengths": [3, 3, 2, 4]}
    run = _write_jsonl(tmp_path / "run.jsonl", [{"category": "rag", "choices": [choice]}])
    base_choice = {"new_tokens": [12], "wall_time": [3.0]}
    base = _write_jsonl(tmp_path / "base.jsonl", [{"category": "rag", "choices": [base_choice]}])
    (rag, overall) = speed_report(load_answers(run), load_answers(base))
    assert rag["task"] == "rag"
    assert rag["speedup"] == pytest.approx(3.0)
    assert rag["mean_accepted_tokens"] == pytest.approx(3.0)
    assert rag["acceptance_rate"] is None


def test_speed_command_prints_report(tmp_path, capsys):
    run = _write_jsonl(
        tmp_path / "run.jsonl", [{"category": "qa", "output_tokens": 8, "wall_time": 1.0}]
    )
    base = _write_jsonl(
        tmp_path / "base.jsonl", [{"category": "qa", "output_tokens": 8, "wall_time": 2.0}]
    )
    args = build_parser().parse_args(["speed", "--file", str(run), "--base", str(base), "--json"])
    assert args._module.run(args) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["speedup"] for r in rows] == [2.0, 2.0]


def test_method_configs():
    configs = speculative_configs(
        ["vanilla", "vanilla-twin", "ngram", "self-skip", "self-skip-noguard"],
        3,
        {"skip_ratio": 0.2, "guard": True},
    )
    assert configs["vanilla"] is None
    assert configs["vanilla-twin"] is None  # a second plain engine, to measure the noise
    assert configs["ngram"] == {
        "method": "ngram",
        "num_speculative_tokens": 3,
        "prompt_lookup_min": 2,
        "prompt_lookup_max": 5,
    }
    assert configs["self-skip"] == {
        "method": "self-skip",
        "num_speculative_tokens": 3,
        "skip_ratio": 0.2,
        "guard": True,
    }
    assert configs["self-skip-noguard"]["guard"] is False  # the variant's own key wins
    assert configs["self-skip-noguard"]["skip_ratio"] == 0.2
    assert any("prompt_lookup_min 2" in note for note in notes(["vanilla", "ngram"]))
    assert not any("ngram" in note for note in notes(["vanilla", "self-skip"]))


def test_fixed_set_config_is_a_valid_pure_self_skip_config():
    config = fixed_set_config({"attention": [3, 6], "mlp": [17]}, 4)
    options = SelfSkipConfig.from_dict(
        {k: v for k, v in config.items() if k not in ("method", "num_speculative_tokens")}
    )
    assert config["method"] == "self-skip" and config["num_speculative_tokens"] == 4
    assert options.has_fixed_set and not options.lookup and not options.guard
    assert (options.attention_skip, options.mlp_skip) == ([3, 6], [17])


def test_method_labels_are_checked():
    assert parse_labels("vanilla, self-skip") == ["vanilla", "self-skip"]
    with pytest.raises(ValueError, match="bogus"):
        parse_labels("vanilla,bogus")
    with pytest.raises(SystemExit):
        build_parser().parse_args(["bench", "--out", "x", "--methods", "bogus"])
    assert set(METHODS) >= {"vanilla", "ngram", "self-skip", "self-skip-noguard", "suffix"}


def test_workload_groups_cover_every_prompt_once():
    workload = Workload([{}] * 5, [1, 2, 4], 8, 0.0, repeats=2)
    assert [list(g) for g in workload.groups(2)] == [[0, 1], [2, 3], [4]]
    assert workload.num_generate_calls() == 2 * (5 + 3 + 2)


def test_rounds_rotate_the_methods_and_count_every_call():
    workload = Workload([{}] * 4, [1, 4], 8, 0.0, repeats=2, rounds=3)
    labels = ["vanilla", "ngram", "self-skip"]
    orders = [workload.method_order(labels, r) for r in range(3)]
    assert [order.index("vanilla") for order in orders] == [0, 2, 1]
    assert workload.num_generate_calls() == 3 * 2 * (4 + 1)


def test_interleaved_groups_meet_a_new_order_in_every_repeat():
    workload = Workload([{}] * 8, [2], 8, 0.0, repeats=3)
    labels = ["vanilla", "vanilla-twin", "ngram", "self-skip"]
    groups = workload.groups(2)
    orders = {
        (repeat, group.start): workload.group_order(labels, 2, repeat, group)
        for repeat, group in workload.timed_groups(2)
    }
    for group in groups:  # four groups, four methods: a turn counter repeated itself
        firsts = [orders[repeat, group.start][0] for repeat in range(3)]
        assert len(set(firsts)) == 3
    for repeat in range(3):
        assert {orders[repeat, group.start][0] for group in groups} == set(labels)


def test_rounds_merge_timings_and_sum_counters():
    def engine_run(repeat: int, drafts: int, phase: str) -> MethodRun:
        request = RequestResult("q", "qa", 8)
        stats = DraftStats(drafts=drafts, draft_tokens=2 * drafts)
        return MethodRun(
            groups=[GroupRun("self-skip", 1, repeat, 1.0, (request,), stats)],
            skip_sets={1: {"attention": [repeat], "mlp": []}},
            search={"start": phase, "end": phase},
        )

    merged = engine_run(0, 3, "optimizing")
    merged.merge(engine_run(1, 5, "accelerating"))
    assert [g.repeat for g in merged.groups] == [0, 1]
    assert merged.proposer_stats[("self-skip", 1)].drafts == 8
    assert merged.proposer_stats[("self-skip", 1)].draft_tokens == 16
    assert merged.skip_sets[1]["attention"] == [1]
    assert merged.search == {"start": "optimizing", "end": "accelerating"}


def test_questions_by_category():
    picked = select_questions(None, 16, ["summarization", "rag"])
    assert [q["category"] for q in picked] == ["rag"] * 8 + ["summarization"] * 8
    with pytest.raises(ValueError, match="unknown categories \\['cooking'\\]"):
        select_questions(None, 4, ["coding", "cooking"])


def test_online_commands():
    spec = speculative_configs(["self-skip"], 4, {})["self-skip"]
    server = server_command("MODEL", spec, 16, 8123)
    assert server[:5] == [sys.executable, "-m", "swift_vllm.cli", "serve", "MODEL"]
    assert server[server.index("--host") + 1] == "127.0.0.1"
    assert server[server.index("--port") + 1] == "8123"
    assert server[server.index("--max-num-seqs") + 1] == "16"
    assert json.loads(server[server.index("--speculative-config") + 1]) == spec
    assert "--speculative-config" not in server_command("MODEL", None, 16, 8123)

    work = ServeWorkload("MODEL", Path("p.jsonl"), [1, 4], 8, 32, 0.0)
    bench = bench_command("http://127.0.0.1:8123", "self-skip", 4, work, Path("out"))
    assert bench[3:6] == ["vllm", "bench", "serve"]
    assert bench[bench.index("--dataset-name") + 1] == "custom"
    assert bench[bench.index("--max-concurrency") + 1] == "4"
    assert bench[bench.index("--result-filename") + 1] == "self-skip_c4.json"


def test_engine_args_replace_the_defaults_and_are_checked():
    gpu = '{"dtype": "bfloat16", "enforce_eager": false}'
    args = build_parser().parse_args(["bench", "--out", "x", "--engine-args", gpu])
    workload = Workload([{}], [1, 8], 8, 0.0, repeats=1, engine_args=args.engine_args)
    overrides = engine_overrides(None, workload)
    assert overrides["dtype"] == "bfloat16" and overrides["enforce_eager"] is False
    assert overrides["max_num_seqs"] == 8
    for bad, message in (
        ("{", "not JSON"),
        ("[1]", "JSON object"),
        ('{"dtypo": "float16"}', "not vLLM engine arguments: dtypo"),
        ('{"max_num_seqs": 4}', "set by the benchmark itself: max_num_seqs"),
    ):
        with pytest.raises(ValueError, match=message):
            parse_engine_args(bad)
    with pytest.raises(SystemExit):
        build_parser().parse_args(["bench-serve", "--out", "x", "--engine-args", "{"])


def test_server_flags_are_what_vllm_serve_parses():
    """The served engine gets the offline defaults, then ``--engine-args``,
    spelled as ``vllm serve``'s own parser reads them."""
    from vllm.entrypoints.launchers.cli_args import make_arg_parser
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    parser = make_arg_parser(FlexibleArgumentParser())
    plain = parser.parse_args(["MODEL", *server_args(16)])
    assert (plain.dtype, plain.enforce_eager, plain.max_num_seqs) == ("float32", True, 16)
    assert plain.enable_prefix_caching is False
    engine = {"dtype": "bfloat16", "enforce_eager": False, "compilation_config": {"mode": 0}}
    gpu = parser.parse_args(["MODEL", *server_args(16, engine)])
    assert (gpu.dtype, gpu.enforce_eager, gpu.gpu_memory_utilization) == ("bfloat16", False, 0.3)
    assert gpu.compilation_config.mode == 0


def test_online_rows_and_speedups():
    result = {"output_throughput": 30.0, "median_ttft_ms": 12.0, "unrelated": 1}
    result |= {"spec_decode_acceptance_rate": 75.0, "spec_decode_acceptance_length": 2.5}
    rows = [
        row_of("vanilla", 4, {"output_throughput": 20.0}),
        row_of("self-skip", 4, result),
        row_of("self-skip", 8, result),
    ]
    add_speedups(rows)
    assert rows[1]["median_ttft_ms"] == 12.0
    assert "unrelated" not in rows[1]
    assert (rows[1]["acceptance_rate"], rows[1]["acceptance_length"]) == (0.75, 2.5)
    assert rows[0]["acceptance_rate"] is None
    assert [r["speedup"] for r in rows] == [1.0, 1.5, None]


FAKE_SERVER = """
import http.server, subprocess, sys
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
print(child.pid, flush=True)
class Health(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.end_headers()
http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), Health).serve_forever()
"""


def test_server_is_local_and_its_process_group_is_stopped(tmp_path):
    log = tmp_path / "server.log"
    with server(lambda port: [sys.executable, "-c", FAKE_SERVER, str(port)], log) as base:
        assert base.startswith("http://127.0.0.1:")
        child = psutil.Process(int(log.read_text().split()[0]))  # like vLLM's engine core
    psutil.wait_procs([child], timeout=10)
    assert not child.is_running() or child.status() == psutil.STATUS_ZOMBIE


@pytest.mark.integration
def test_bench_command_end_to_end(smollm2, tmp_path):
    """A tiny real run in a subprocess (its engines stay out of this process),
    two rounds of fresh engines."""
    out = tmp_path / "bench"
    command = [sys.executable, "-m", "swift_vllm.cli", "bench", "--model", smollm2]
    command += ["--methods", "vanilla,self-skip", "--num-prompts", "2", "--max-tokens", "8"]
    command += ["--batch-sizes", "1,2", "--repeats", "1", "--rounds", "2", "--out", str(out)]
    command += ["--engine-args", '{"max_model_len": 1024}']
    done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads((out / "results.json").read_text())
    assert results["command"].startswith("swift-vllm bench --model")
    assert results["engine"]["max_model_len"] == 1024
    assert results["errors"] == {}
    assert set(results["self_skip_guard"]["self-skip"]) == {"1", "2"}
    assert results["methods"]["self-skip"]["method"] == "self-skip"
    rows = {(r["method"], r["batch_size"], r["category"]): r for r in results["results"]}
    assert {(m, b) for m, b, _ in rows} == {
        (m, b) for m in ("vanilla", "self-skip") for b in (1, 2)
    }
    skip = rows[("self-skip", 1, ALL)]
    assert skip["output_tokens"] > 0 and skip["speedup"] > 0
    assert skip["mean_draft_length"] is None or skip["mean_draft_length"] >= 1
    assert set(skip["draft_sources"]) == {"lookup", "self-skip"}
    assert set(results["self_skip_sets"]["self-skip"]) == {"1", "2"}
    answers = out / "answers"
    assert results["rounds"] == 2
    assert len(load_answers(answers / "self-skip_bs1.jsonl")) == 4  # two prompts, two rounds
    assert (out / "speedup_by_batch_size.png").exists()
    assert "speedup" in done.stdout


@pytest.mark.integration
def test_bench_interleaved_times_each_group_on_every_method_in_turn(smollm2, tmp_path):
    """--interleave: all engines at once, each group run by every method
    back to back, the first method rotating."""
    out = tmp_path / "bench"
    labels = ["vanilla", "ngram", "self-skip"]
    command = [sys.executable, "-m", "swift_vllm.cli", "bench", "--model", smollm2]
    command += ["--methods", ",".join(labels), "--num-prompts", "2", "--max-tokens", "8"]
    command += ["--batch-sizes", "1", "--repeats", "2", "--interleave", "--out", str(out)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads((out / "results.json").read_text())
    assert results["interleaved"] is True and results["errors"] == {}
    calls = sorted(
        (a["started"], a["method"], a["repeat"], a["question_id"])
        for label in labels
        for a in map(
            json.loads, (out / "answers" / f"{label}_bs1.jsonl").read_text().split("\n")[:-1]
        )
    )
    # 2 prompts x 2 repeats = 4 groups, each run by the 3 methods in a row;
    # the first method moves on by one from group to group and from repeat
    # to repeat, so each group meets a different order in each repeat
    turns = [calls[i : i + 3] for i in range(0, len(calls), 3)]
    assert len(turns) == 4
    orders = {}
    for turn, group in enumerate(turns):
        assert len({(repeat, qid) for _, _, repeat, qid in group}) == 1
        repeat, position = divmod(turn, 2)
        assert group[0][2] == repeat
        shift = (repeat + position) % 3
        methods = [method for _, method, _, _ in group]
        assert methods == labels[shift:] + labels[:shift]
        orders.setdefault(group[0][3], []).append(methods)
    assert all(first != second for first, second in orders.values())
    assert all(r["speedup"] > 0 for r in results["results"])
