"""`labkit tiny llama|baichuan` prints the model folder as its last line; bad arguments exit non-zero."""

import json

import pytest

from labkit.cli import main as cli_main
from labkit.models.cli import tiny_main
from labkit.models.tiny import tiny_model_path, tiny_tokenizer_path


@pytest.mark.parametrize("arch", ["llama", "baichuan"])
def test_tiny_prints_folder_last(arch, capsys):
    assert cli_main(["tiny", arch]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[-1] == str(tiny_model_path(arch))


def test_tiny_info_and_tokenizer(capsys):
    assert tiny_main(["baichuan", "--info"]) == 0
    out = capsys.readouterr().out.strip()
    last = out.splitlines()[-1]
    record = json.loads(out[: -len(last)])
    assert record["arch"] == "baichuan" and record["pretrain"]["final_loss"] < record["pretrain"]["first_loss"]
    assert tiny_main(["tokenizer"]) == 0
    assert capsys.readouterr().out.strip().splitlines()[-1] == str(tiny_tokenizer_path())


def test_tiny_rejects_unknown_arch(capsys):
    with pytest.raises(SystemExit) as exc:
        tiny_main(["gpt2"])
    assert exc.value.code == 2 and "invalid choice" in capsys.readouterr().err


def test_tiny_several_in_one_process(capsys):
    assert tiny_main(["llama", "baichuan"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[-2:] == [str(tiny_model_path("llama")), str(tiny_model_path("baichuan"))]
