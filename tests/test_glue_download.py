"""data/glue.py's download (glue_eval.py --download): GLUE's per-task zips and MRPC's text files, served from
a file:// mirror built here in the real formats (no network)."""
import socket
import zipfile

import pytest

import data.glue
from data.glue import TASKS, GlueDataError, download_glue, extract_task_zip, load_examples
from glue_eval import main

RTE_TRAIN = "index\tsentence1\tsentence2\tlabel\n0\tA cat sat.\tAn animal sat.\tentailment\n1\tIt rained.\tIt was dry.\tnot_entailment\n"
RTE_DEV = "index\tsentence1\tsentence2\tlabel\n0\tDogs bark.\tDogs make noise.\tentailment\n"
COLA = "gj04\t1\t\tOur friends won't buy this analysis.\ngj04\t0\t*\tThe more books.\n"  # no header, as GLUE ships it
QNLI = "index\tquestion\tsentence\tlabel\n0\tWho?\tHe did.\tentailment\n"
MNLI = "index\tsentence1\tsentence2\tgold_label\n0\tA man eats.\tSomeone eats.\tentailment\n1\tA man eats.\tNobody eats.\tcontradiction\n"
MRPC_HEADER = "\ufeffQuality\t#1 ID\t#2 ID\t#1 String\t#2 String\n"  # SentEval's files start with a byte-order mark
MRPC_TRAIN = MRPC_HEADER + "1\t702876\t702977\tAmrozi accused his brother.\tHe accused his brother.\n" \
    "0\t2108705\t2108831\tYucaipa owned Dominick's.\tYucaipa bought Dominick's.\n" \
    "1\t1330381\t1330521\tThey had published an advertisement.\tAn ad was published.\n"
MRPC_TEST = MRPC_HEADER + "1\t1089874\t1089925\tPCCW's chief will leave.\tThe chief is leaving.\n"
MRPC_DEV_IDS = "2108705\t2108831\n"


def write_zip(path, top_folder, files: dict, extra: dict | None = None):
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr(f"{top_folder}/", "")
        for name, text in files.items():
            archive.writestr(f"{top_folder}/{name}", text)
        for name, text in (extra or {}).items():
            archive.writestr(name, text)


@pytest.fixture
def mirror(tmp_path):
    """A folder laid out like dl.fbaipublicfiles.com/glue/data (+ SentEval's MRPC files), as a file:// URL."""
    root = tmp_path / "mirror"
    root.mkdir()
    write_zip(root / "RTE.zip", "RTE", {"train.tsv": RTE_TRAIN, "dev.tsv": RTE_DEV, "test.tsv": RTE_DEV},
              extra={"__MACOSX/RTE/._train.tsv": "resource fork"})
    write_zip(root / "CoLA.zip", "CoLA", {"train.tsv": COLA, "dev.tsv": COLA, "original/raw/in_domain_train.tsv": COLA})
    write_zip(root / "QNLIv2.zip", "QNLI", {"train.tsv": QNLI, "dev.tsv": QNLI})  # zip and folder names differ
    write_zip(root / "MNLI.zip", "MNLI", {"train.tsv": MNLI, "dev_matched.tsv": MNLI, "dev_mismatched.tsv": MNLI})
    for name, text in [("msr_paraphrase_train.txt", MRPC_TRAIN), ("msr_paraphrase_test.txt", MRPC_TEST),
                       ("mrpc_dev_ids.tsv", MRPC_DEV_IDS)]:
        (root / name).write_text(text, encoding="utf-8")
    return root.as_uri()


def test_download_extracts_each_zip_into_glue_layout_and_checks_it(mirror, tmp_path):
    glue = tmp_path / "glue"
    checked, failed = download_glue(glue, ["rte", "cola", "qnli", "mnli"], base_url=mirror, senteval_url=mirror,
                                    progress=False)
    assert failed == {}
    assert checked == {"rte": {"train.tsv": 2, "dev.tsv": 1}, "cola": {"train.tsv": 2, "dev.tsv": 2},
                       "qnli": {"train.tsv": 1, "dev.tsv": 1},
                       "mnli": {"train.tsv": 2, "dev_matched.tsv": 2, "dev_mismatched.tsv": 2}}
    assert (glue / "QNLI" / "train.tsv").is_file() and not (glue / "QNLIv2").exists()
    assert (glue / "CoLA" / "original" / "raw" / "in_domain_train.tsv").is_file()  # sub-folders kept
    assert not (glue / "__MACOSX").exists() and not list(glue.glob("*.part"))
    assert (glue / "RTE" / "train.tsv").read_text() == RTE_TRAIN


def test_mrpc_is_split_with_glue_dev_ids(mirror, tmp_path):
    glue = tmp_path / "glue"
    checked, failed = download_glue(glue, ["mrpc"], base_url=mirror, senteval_url=mirror, progress=False)
    assert failed == {} and checked == {"mrpc": {"train.tsv": 2, "dev.tsv": 1}}
    texts_a, _, labels = load_examples(TASKS["mrpc"], glue / "MRPC" / "dev.tsv")
    assert texts_a == ["Yucaipa owned Dominick's."] and labels == [0]
    assert (glue / "MRPC" / "test.tsv").read_text().splitlines()[:2] == [
        "index\t#1 ID\t#2 ID\t#1 String\t#2 String", "0\t1089874\t1089925\tPCCW's chief will leave.\tThe chief is leaving."]


def test_a_broken_or_unreachable_task_is_reported_and_the_others_still_download(mirror, tmp_path):
    mirror_dir = tmp_path / "mirror"
    write_zip(mirror_dir / "RTE.zip", "RTE", {"train.tsv": RTE_TRAIN})  # no dev.tsv
    (mirror_dir / "WNLI.zip").write_text("<html>not found</html>")  # an error page saved under the zip's name
    checked, failed = download_glue(tmp_path / "glue", ["rte", "wnli", "cola"], base_url=mirror,
                                    senteval_url=mirror, progress=False)
    assert list(checked) == ["cola"]
    assert "dev.tsv" in failed["rte"] and "not a zip file" in failed["wnli"]
    assert not (tmp_path / "glue" / "downloads" / "WNLI.zip").exists()  # deleted, so a rerun fetches it again

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    _, failed = download_glue(tmp_path / "glue2", ["sst2"], base_url=f"http://127.0.0.1:{port}/glue", progress=False)
    assert f"http://127.0.0.1:{port}/glue/SST-2.zip" in failed["sst2"] and "--glue-dir" in failed["sst2"]


def test_zip_members_outside_their_folder_are_refused(tmp_path):
    write_zip(tmp_path / "RTE.zip", "RTE", {"train.tsv": RTE_TRAIN}, extra={"RTE/../../evil.txt": "x"})
    with pytest.raises(GlueDataError, match="outside its folder"):
        extract_task_zip(tmp_path / "RTE.zip", TASKS["rte"], tmp_path / "glue")
    assert not (tmp_path / "evil.txt").exists() and not (tmp_path.parent / "evil.txt").exists()


def test_download_flag(mirror, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(data.glue, "GLUE_BASE_URL", mirror)
    checked, _ = main(["--download", str(tmp_path / "glue"), "--tasks", "rte,cola"])
    assert set(checked) == {"rte", "cola"} and "--glue-dir" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="error: wnli: could not download .*WNLI.zip"):
        main(["--download", str(tmp_path / "glue"), "--tasks", "wnli"])
