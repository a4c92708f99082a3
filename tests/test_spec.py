"""Device resolution: what runs where, and one-line errors for devices that are not there."""

from __future__ import annotations

import pytest

from runner.errors import ConfigError
from runner.spec import resolve


def test_auto_without_cuda_runs_eager_one_stream_on_cpu_and_says_so(make_cfg):
    spec = resolve(make_cfg(), cuda_count=lambda: 0)
    assert spec.device == "cpu"
    assert (spec.graph, spec.streams, spec.pinned, spec.tf32) == (False, 1, False, False)
    assert len(spec.notices) == 2 and "need CUDA" in spec.notices[0]
    assert "graph=true streams=4 pinned=true staging.slots=2 capture.copies_in_graph=true tf32=true" in spec.notices[0]
    assert (spec.slots, spec.copy_thread, spec.copies_in_graph) == (1, False, False)
    # The baseline and the ceiling would be the schedule's own code: skipped, and said so.
    assert (spec.baseline, spec.measure.ceiling) == (False, False)
    assert "not measured" in spec.notices[1]
    assert spec.notices[0].startswith("graphs, streams, pinned memory, a ring of staging slots, copies in graphs and "
                                      "TF32 need CUDA: running eager")
    # Only what was asked is named (staging.slots=4 alone had read as graphs, streams, pinned memory and TF32).
    plain = ("graph=false", "streams=1", "pinned=false", "tf32=false", "capture.copies_in_graph=false")
    spec = resolve(make_cfg(*plain, "staging.slots=4"), cuda_count=lambda: 0)
    assert spec.notices[0].startswith("a ring of staging slots needs CUDA: running eager with 1 stream, 1 staging slot")
    assert spec.notices[0].endswith("(asked: staging.slots=4)")
    assert not any("need" in n and "CUDA" in n for n in resolve(make_cfg(*plain, "staging.slots=1"),
                                                             cuda_count=lambda: 0).notices)


def test_every_setting_that_changes_is_noticed(make_cfg):
    """Each key whose effective value differs from the request is named in a notice."""
    cases = [
        ("device=cpu", "tf32=true"),
        ("device=cpu", "staging.copy_thread=true", "staging.mode=copy"),
        ("staging.copy_thread=true",),  # direct staging: no copy thread
        ("graph=false",),  # copies cannot be captured without a graph
        ("pinned=false",),
    ]
    for overrides in cases:
        cfg = make_cfg(*overrides)
        spec = resolve(cfg, cuda_count=lambda: 1)
        asked = {"tf32": cfg.tf32, "streams": cfg.streams, "graph": cfg.graph, "pinned": cfg.pinned,
                 "copies_in_graph": cfg.capture.copies_in_graph, "slots": cfg.staging.slots,
                 "copy_thread": cfg.staging.copy_thread}
        ran = spec.effective()
        for key, value in asked.items():
            if ran[key] != value:
                assert any(key in n for n in spec.notices), (overrides, key, spec.notices)


def test_auto_with_cuda_keeps_the_request(make_cfg):
    spec = resolve(make_cfg("streams=8"), cuda_count=lambda: 2)
    assert spec.device == "cuda:0"
    assert (spec.graph, spec.streams, spec.pinned) == (True, 8, True)
    assert spec.notices == ()
    assert spec.mode == "graph copies-in-graph x8 pinned direct/2"
    assert (spec.staging, spec.slots, spec.copy_thread) == ("direct", 2, False)


def test_cpu_without_extras_has_no_notice(make_cfg):
    spec = resolve(make_cfg("device=cpu", "graph=false", "streams=1", "pinned=false", "staging.slots=1",
                            "capture.copies_in_graph=false", "tf32=false", "baseline=false", "measure.ceiling=false"),
                   cuda_count=lambda: 1)
    assert spec.device == "cpu" and spec.notices == ()


@pytest.mark.parametrize(
    ("device", "count", "expected"),
    [
        ("cuda", 0, "device=cuda: CUDA is not available here"),
        ("cuda:0", 0, "device=cuda:0: CUDA is not available here"),
        ("cuda:3", 1, "device=cuda:3: this machine has 1 CUDA device(s) (cuda:0..cuda:0); use one of those"),
    ],
)
def test_missing_cuda_device_is_a_one_line_error(make_cfg, device, count, expected):
    with pytest.raises(ConfigError) as info:
        resolve(make_cfg(f"device={device}"), cuda_count=lambda: count)
    assert str(info.value).startswith(expected)


def test_a_compile_cache_that_cannot_be_a_folder_is_refused_with_its_key(make_cfg, tmp_path):
    """It failed the job in the build with a bare FileNotFoundError / FileExistsError."""
    afile = tmp_path / "afile"
    afile.write_text("")
    for folder in (afile, "/proc/nope"):
        with pytest.raises(ConfigError, match=rf"^compile_cache={folder}: cannot use it as a folder \(.+\); name a "
                                              "folder that can be written$"):
            resolve(make_cfg("device=cpu", "compile=default", f"compile_cache={folder}"))
    made = tmp_path / "cache" / "inductor"
    assert resolve(make_cfg("device=cpu", "compile=default", f"compile_cache={made}")).compile_cache == str(made)
    assert made.is_dir()
    # With compile=none the folder is not used: said (it had been taken without a word).
    spec = resolve(make_cfg("device=cpu", "compile_cache=/proc/nope"))
    assert "compile_cache=/proc/nope applies to compile=default and the other compile modes: with compile=none " \
           "nothing is compiled, and the folder is not used" in spec.notices
    assert not [n for n in resolve(make_cfg("device=cpu")).notices if "compile_cache" in n]


def test_bf16_on_a_gpu_without_it_is_refused(make_cfg):
    with pytest.raises(ConfigError, match=r"^dtype=bf16: cuda:0 cannot run bf16"):
        resolve(make_cfg("dtype=bf16"), cuda_count=lambda: 1, bf16_supported=lambda d: False)


def test_copies_in_graph_needs_graph_and_pinned(make_cfg):
    spec = resolve(make_cfg("capture.copies_in_graph=true", "pinned=false"), cuda_count=lambda: 1)
    assert spec.copies_in_graph is False
    assert "needs pinned=true" in spec.notices[0]
    spec = resolve(make_cfg("capture.copies_in_graph=true", "graph=false"), cuda_count=lambda: 1)
    assert spec.copies_in_graph is False and "needs graph=true" in spec.notices[0]
    spec = resolve(make_cfg("capture.copies_in_graph=true"), cuda_count=lambda: 1)
    assert spec.copies_in_graph is True and spec.mode == "graph copies-in-graph x4 pinned direct/2"


def test_timestamps_without_the_latency_pass_they_come_from_are_a_notice(make_cfg):
    """They were asked, and silently not written."""
    spec = resolve(make_cfg("device=cpu", "timestamps=csv", "measure.latency_requests=0"))
    assert ("timestamps=csv: written from the latency pass, which measure.latency_requests=0 does not run: no "
            "timestamps file") in spec.notices
    spec = resolve(make_cfg("device=cpu", "timestamps=csv", "load.scenario=single_stream"))
    assert any(n.startswith("timestamps=csv: written from the latency pass, which load.scenario=single_stream")
               for n in spec.notices)
    assert not any(n.startswith("timestamps") for n in resolve(make_cfg("device=cpu", "timestamps=csv")).notices)


def test_interleave_with_nothing_to_interleave_is_a_notice_and_off(make_cfg):
    """On the CPU (no baseline, no ceiling) measure.interleave=true ran silently, and shared the
    time of passes that never ran among the throughput's (its passes half as long)."""
    spec = resolve(make_cfg("device=cpu", "measure.interleave=true"))
    assert spec.measure.interleave is False
    assert ("measure.interleave=true alternates the throughput's passes with the baseline's and the ceiling's, "
            "and neither runs here: the throughput's passes run back to back") in spec.notices
    spec = resolve(make_cfg("measure.interleave=true"), cuda_count=lambda: 1)
    assert spec.measure.interleave is True and not any("interleave" in n for n in spec.notices)


def test_more_streams_than_torchs_pool_holds_are_refused_on_a_gpu(make_cfg):
    """torch.cuda.Stream() takes streams from a pool of 32 per device: lane 33 had shared lane
    1's stream, serialized, while the job reported 64 concurrent streams."""
    with pytest.raises(ConfigError, match=r"^streams=64: torch hands out 32 distinct CUDA streams per device"):
        resolve(make_cfg("streams=64"), cuda_count=lambda: 1)
    assert resolve(make_cfg("streams=32"), cuda_count=lambda: 1).streams == 32
    # On the CPU too, which runs one stream anyway: the config would fail on its first GPU (walk).
    with pytest.raises(ConfigError, match=r"^streams=64: torch hands out 32"):
        resolve(make_cfg("streams=64", "device=cpu"))
