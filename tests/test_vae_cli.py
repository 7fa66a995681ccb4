"""`facefactors vae ...` end to end on the tiny preset (synthetic blobs), and its error messages."""

import json

import numpy as np
import pytest
from PIL import Image

from facefactors.cli.main import main


def run_cli(args, capsys):
    try:
        main(args)
        code = 0
    except SystemExit as e:
        code = e.code
    captured = capsys.readouterr()
    return code, captured.out + captured.err


TRAIN = ["vae", "train", "--model", "beta_vae", "--preset", "tiny", "--set", "loss.beta=2"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One tiny run shared by the tests below (training dominates their time)."""
    out = tmp_path_factory.mktemp("cli") / "run"
    main(TRAIN + ["--out", str(out)])
    return out


def test_train_traverse_attribute(trained, capsys):
    out = trained
    assert (out / "weights.safetensors").is_file() and (out / "loss_curves.png").is_file()
    assert "beta: 2.0" in (out / "config.yaml").read_text()

    code, text = run_cli(["vae", "traverse", str(out), "--images", "2", "--steps", "5"], capsys)
    assert code == 0, text
    grid = np.asarray(Image.open(out / "traversals" / "traversal_0.png"))
    assert grid.shape == (4 * 34 + 2, 5 * 34 + 2, 3)  # 4 latent dims x 5 values of 32x32 with 2-px padding
    assert (out / "traversals" / "traversal_1.png").is_file() and (out / "traversals" / "samples.png").is_file()
    assert len(json.loads((out / "traversals" / "dimension_kl.json").read_text())["kl_per_dim"]) == 4

    code, text = run_cli(["vae", "attribute", str(out), "--attribute", "bar", "--alphas", "-1,0,1,2", "--rows", "3"], capsys)
    assert code == 0, text
    vec = json.loads((out / "attributes" / "bar" / "vector.json").read_text())
    assert vec["with"] == "yes" and vec["n_with"] + vec["n_without"] == 256 and len(vec["delta"]) == 4
    grid = np.asarray(Image.open(out / "attributes" / "bar" / "grid.png"))
    assert grid.shape == (3 * 34 + 2, 5 * 34 + 2, 3)  # 3 faces x (original + 4 alphas)
    assert (out / "attributes" / "bar" / "strip.png").is_file()

    # Running a finished run again with the same options resumes, trains no further, succeeds.
    code, text = run_cli(TRAIN + ["--out", str(out)], capsys)
    assert code == 0 and "done" in text, text


@pytest.mark.parametrize(
    "args,message",
    [
        (["vae", "train", "--model", "wae", "--preset", "tiny"], "model.kind='wae' is not one of"),
        (["vae", "train", "--preset", "tiny", "--set", "model.latnt_dim=3"], "unknown field"),
        (["vae", "train", "--preset", "huge"], "no preset 'huge'"),
        (["vae", "train", "--model", "cvae", "--preset", "tiny"], "needs model.condition"),
        (["vae", "train", "--model", "vae", "--preset", "tiny", "--set", "loss.beta=4"], "plain VAE"),
        (["vae", "traverse", "nowhere"], "no such run directory"),
        (["vae", "experiment", "nothing"], "unknown experiment"),
        (["vae", "experiment", "attributes", "--variants", "vae,beta9"], "unknown ['beta9']"),
        (["vae", "experiment", "pythae", "--variants", "vae"], "pythae compares one"),
        (["vae", "experiment", "tradeoff", "--alphas", "1,2"], "attributes experiment only"),
        (["vae", "experiment", "attributes", "--alphas", "1,x"], "comma-separated"),
        (["vae", "train", "--preset", "tiny", "--set", "data.source=world", "--set", "data.zoom=0.5"], "set data.zoom to 1 or more"),
    ],
)
def test_errors_are_one_line(tmp_path, capsys, args, message):
    if "train" in args:
        args = args + ["--out", str(tmp_path / "r")]
    code, text = run_cli(args, capsys)
    assert code == 2
    assert message in text and "Traceback" not in text


def test_attribute_errors(trained, capsys):
    out = trained
    code, text = run_cli(["vae", "attribute", str(out), "--attribute", "smile"], capsys)
    assert code == 2 and "not among the labels" in text
    code, text = run_cli(["vae", "attribute", str(out), "--attribute", "colour", "--with", "purple"], capsys)
    assert code == 2 and "no class 'purple'" in text
    code, text = run_cli(["vae", "attribute", str(out), "--attribute", "colour", "--alphas", "1,x"], capsys)
    assert code == 2 and "comma-separated" in text


def test_attribute_on_a_user_folder_with_labels_csv(trained, tmp_path, capsys):
    """Any categorical column of a user's labels.csv works, with its own class names."""
    from facefactors.data.description import DatasetDescription, Factor
    from facefactors.data.labels import write_label_table, write_label_yaml
    from facefactors.train.vae_data import render_blobs

    rng = np.random.default_rng(0)
    factors = np.stack([rng.integers(0, k, 24) for k in (3, 3, 5, 5, 2)], 1)
    images = render_blobs(factors, 32)
    folder = tmp_path / "photos"
    folder.mkdir()
    keys = []
    for i, img in enumerate(images):
        keys.append(f"img_{i:02d}.png")
        Image.fromarray((img.transpose(1, 2, 0) * 255).round().astype(np.uint8)).save(folder / keys[-1])
    glasses = factors[:, 4].copy()
    glasses[:3] = -1  # a few unlabelled rows
    desc = DatasetDescription("photos", (Factor("glasses", "categorical", ("without", "with")),))
    write_label_table(folder / "labels.csv", "file", keys, {"glasses": glasses}, desc)
    write_label_yaml(folder / "labels.yaml", desc)
    out = tmp_path / "edits"
    code, text = run_cli(["vae", "attribute", str(trained), "--attribute", "glasses", "--with", "with", "--data", str(folder), "--rows", "2", "--out", str(out)], capsys)
    assert code == 0, text
    vec = json.loads((out / "vector.json").read_text())
    assert (vec["with"], vec["without"]) == ("with", "without")
    assert vec["n_with"] == int((glasses == 1).sum()) and vec["n_without"] == int((glasses == 0).sum())
    assert (out / "grid.png").is_file() and (out / "strip.png").is_file()


def test_usage_error_is_one_message_and_exit_code_2(capsys):
    with pytest.raises(SystemExit) as e:
        main(["vae", "train", "--no-such-option"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "--no-such-option" in err and "Traceback" not in err
