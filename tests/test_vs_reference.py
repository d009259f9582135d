"""benchmarks/vs_reference.py without torch: configuration selection, arguments, the table."""

import importlib.util
import pathlib
import sys

import pytest

PATH = pathlib.Path(__file__).resolve().parents[1] / "benchmarks" / "vs_reference.py"


@pytest.fixture(scope="module")
def vs():
    spec = importlib.util.spec_from_file_location("vs_reference", PATH)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_configurations_and_only(vs):
    names = [c["name"] for c in vs.all_configs()]
    assert len(names) == 10 and names[0] == "S-256-33-encode-direct"
    assert "S-128-129-decode-chunked" in names and not any(n.startswith("L-") for n in names)
    assert {c["name"] for c in vs.all_configs(with_l=True)} >= {"L-256-33-decode-chunked"}
    assert all(c["model"] == "tiny" for c in vs.all_configs(quick=True))
    picked = vs.select(vs.all_configs(), "S-256-*-direct, *-129-*")
    assert [c["name"] for c in picked] == [
        "S-256-33-encode-direct",
        "S-256-33-decode-direct",
        "S-128-129-encode-chunked",
        "S-128-129-decode-chunked",
    ]
    with pytest.raises(ValueError, match="matches no configuration"):
        vs.select(vs.all_configs(), "S-512-*")


def test_chunks(vs):
    assert vs.parse_chunks("8,2") == (8, 2) and vs.parse_chunks("auto") is None
    for bad in ("8", "a,b", "0,2"):
        with pytest.raises(ValueError, match="our_chunks"):
            vs.parse_chunks(bad)
    enc, dec = (dict(op=op, mode="chunked") for op in ("encode", "decode"))
    assert (vs.our_t_chunk(enc, (8, 2)), vs.our_t_chunk(dec, (8, 2))) == (8, 2)
    assert vs.our_t_chunk(enc, None) is None  # auto
    assert vs.our_t_chunk(dict(op="decode", mode="direct"), (8, 2)) == 0


def test_arguments(vs, tmp_path, capsys):
    ref = tmp_path / "WF-VAE"
    (ref / "causalvideovae" / "model").mkdir(parents=True)
    (ref / "causalvideovae" / "model" / "__init__.py").write_text("")
    ok = ["--reference", str(ref), "--torch_python", sys.executable]
    args = vs.parse_args(ok + ["--only", "*-128-*", "--out", str(tmp_path / "o.json")])
    assert len(args.configs) == 6 and args.chunks == (8, 2)
    for bad, msg in [
        (["--reference", str(tmp_path), "--torch_python", sys.executable], "not a WF-VAE checkout"),
        (["--reference", str(ref), "--torch_python", str(tmp_path / "none")], "not an executable"),
        (ok + ["--only", "nothing"], "matches no configuration"),
        (ok + ["--our_chunks", "x"], "our_chunks"),
        (ok + ["--warm", "0"], "--warm"),
        (["--torch_python", sys.executable], "--reference is required"),
    ]:
        with pytest.raises(SystemExit) as e:
            vs.parse_args(bad)
        assert e.value.code == 2 and msg in capsys.readouterr().err


def test_table_and_ratios(vs):
    def side(warm, peak, **kw):
        return dict(first_s=warm * 2, warm_s=[warm * 1.1, warm], peak_rss_mib=peak, **kw)

    rows = [
        dict(
            vs.all_configs()[0],
            reference=side(7.0, 1200.0, loaded_rss_mib=330.0),
            ours=side(3.5, 600.0, loaded_rss_mib=500.0, t_chunk=0),
            max_abs_diff=2e-6,
        ),
        dict(
            vs.all_configs()[3],
            reference=side(30.0, 2000.0, chunks=[4, 2]),
            ours={"error": "exit 1: Traceback\nMemoryError"},
        ),
    ]
    assert vs.ratios(rows[0]) == pytest.approx((2.0, 0.5))
    assert vs.ratios(rows[1]) == (None, None)
    text = vs.table(rows, {"torch": "2.13", "threads": 2, "jax": "0.10", "warm": 2})
    assert "| WF-VAE-S | 1×33×256² | encode | direct |" in text
    assert "7.00 s (first 14.00 s), 1,200 MiB" in text and "2.00× speed, 0.50× memory" in text
    assert "2.0e-06" in text
    assert "chunked (ref enable_tiling 4/2 / ours t_chunk=?)" in text
    assert "S-256-33-decode-chunked ours: MemoryError" in text
    assert "WF-VAE-S reference 330 MiB" in text


def test_from_json_merges_runs(vs, tmp_path, capsys):
    def run(warm):
        row = dict(
            vs.all_configs()[0],
            reference=dict(first_s=1.0, warm_s=[4.0], peak_rss_mib=100.0),
            ours=dict(first_s=1.0, warm_s=[warm], peak_rss_mib=50.0, t_chunk=0),
        )
        return {"info": {"warm": 1}, "results": [row]}

    paths = []
    for i, warm in enumerate((4.0, 2.0)):
        paths.append(tmp_path / f"{i}.json")
        paths[-1].write_text(__import__("json").dumps(run(warm)))
    assert vs.main(["--from_json", *map(str, paths)]) == 0
    out = capsys.readouterr().out
    assert out.count("| WF-VAE-S |") == 1 and "2.00× speed, 0.50× memory" in out
