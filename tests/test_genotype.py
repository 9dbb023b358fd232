"""Tests for the DLSR search space: genotype schema, op registry, derived cell/network, DLSR reproduction."""
from __future__ import annotations

import copy
import os
import random
from pathlib import Path

import pytest
import torch
import yaml

from search_spaces.genotype import (
    Genotype,
    dump_genotype,
    list_genotypes,
    load_genotype,
    save_genotype,
    validate,
)
from search_spaces.network import build_network
from search_spaces.ops import DLSR_PRIMITIVES, OPS, RepConv, build_op
from srcore.yamlio import safe_load

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("SRNAS_SHARED", REPO.parent / "shared"))
DLSR_YAML = REPO / "search_spaces" / "genotypes" / "dlsr_x2.yaml"


def valid_raw() -> dict:
    """A valid genotype mapping (DLSR's x2 result), as yaml.safe_load gives it."""
    return safe_load(DLSR_YAML.read_text())


def load_raw(tmp_path: Path, raw, name: str = "genotype.yaml") -> Genotype:
    path = tmp_path / name
    path.write_text(raw if isinstance(raw, str) else yaml.safe_dump(raw, sort_keys=False))
    return load_genotype(path)


def assert_one_line_error(err: pytest.ExceptionInfo, source: Path | str, key: str) -> None:
    msg = str(err.value)
    assert "\n" not in msg, msg
    assert msg.startswith(f"{source}: "), msg
    assert key in msg, f"{key!r} not named in: {msg}"


# ----------------------------------------------------------------------------------------------------
# schema: round trip and named genotypes


def test_named_genotype_roundtrip_is_byte_exact(tmp_path):
    assert "dlsr_x2" in list_genotypes()
    g = load_genotype("dlsr_x2")
    assert g == load_genotype(DLSR_YAML)
    assert g.cell_ops(1) == ("conv_1x1", "sep_conv_7x7", "sep_conv_5x5")
    assert g.inputs == ((1, 2), (2, 3), (2, 4), (4, 5))
    assert (g.channels, g.num_cells, g.scale, g.rgb_range) == (48, 6, 2, 255.0)
    out = save_genotype(g, tmp_path / "g.yaml")
    assert out.read_text() == DLSR_YAML.read_text()
    assert load_genotype(out) == g


def test_per_cell_form_roundtrip(tmp_path):
    raw = valid_raw()
    raw["num_cells"] = 4
    raw["ops"] = list(DLSR_PRIMITIVES)
    del raw["cell"]
    raw["cells"] = [["conv_3x3", "sep_conv_3x3", "dil_conv_5x5"], ["conv_1x1"] * 3,
                    ["conv_7x7", "dil_conv_3x3", "sep_conv_5x5"], ["sep_conv_7x7", "conv_5x5", "conv_1x1"]]
    raw["inputs"] = [[2, 1], [1, 3]]
    del raw["rgb_range"]  # optional, defaults to 1
    g = load_raw(tmp_path, raw)
    assert g.rgb_range == 1.0 and g.cell is None and g.cell_ops(3)[1] == "dil_conv_3x3"
    text = dump_genotype(g)
    assert safe_load(text) == {**raw, "rgb_range": 1}
    assert dump_genotype(load_raw(tmp_path, text)) == text


def test_dataclass_validates_itself():
    g = load_genotype("dlsr_x2")
    assert validate(g.to_dict()) == g
    with pytest.raises(ValueError, match=r"inputs\[0\]"):
        Genotype(ops=g.ops, cell=g.cell, inputs=((3, 1),), channels=48, num_cells=3, scale=2)


def test_unknown_name_lists_named_genotypes():
    with pytest.raises(ValueError, match="dlsr_x2"):
        load_genotype("no_such_genotype")


# ----------------------------------------------------------------------------------------------------
# schema: malformed files, each a one-line ValueError naming the file and the key


def _set(key, value):
    def mutate(raw):
        raw[key] = value
    return mutate


def _delete(key):
    def mutate(raw):
        del raw[key]
    return mutate


def _set_item(key, index, value):
    def mutate(raw):
        raw[key][index] = value
    return mutate


MALFORMED = [
    # unknown op / op outside the op set
    ("ops[1]", _set_item("ops", 1, "sep_conv_9x9")),
    ("ops[0]", _set_item("ops", 0, 3)),
    ("cell[0]", _set_item("cell", 0, "bogus_op")),
    ("cell[2]", _set_item("cell", 2, "identity")),  # a known op, but not in `ops`
    # arity
    ("cell", _set("cell", ["conv_1x1", "sep_conv_7x7"])),
    ("cell", _set("cell", ["conv_1x1"] * 4)),
    ("inputs[0]", _set_item("inputs", 0, [1, 2, 1])),
    ("inputs[3]", _set_item("inputs", 3, [4])),
    ("inputs", _set("inputs", [[1, 2], [2, 3]])),
    # input indices pointing forward, to itself, out of range
    ("inputs[2] = [5, 1]", _set_item("inputs", 2, [5, 1])),
    ("inputs[1] = [2, 4]", _set_item("inputs", 1, [2, 4])),
    ("inputs[0] = [0, 1]", _set_item("inputs", 0, [0, 1])),
    ("inputs[3] = [-1, 2]", _set_item("inputs", 3, [-1, 2])),
    ("inputs[3] = [9, 2]", _set_item("inputs", 3, [9, 2])),
    ("inputs[1] = [2, 2]", _set_item("inputs", 1, [2, 2])),
    # missing / unknown / conflicting keys
    *[(f"'{k}'", _delete(k)) for k in ("version", "space", "scale", "channels", "num_cells", "ops",
                                         "inputs")],
    ("cell/cells", _delete("cell")),
    ("cell/cells", _set("cells", [["conv_1x1", "sep_conv_7x7", "sep_conv_5x5"]] * 6)),
    ("'depth'", _set("depth", 3)),
    # wrong types
    ("channels", _set("channels", "48")),
    ("channels", _set("channels", 48.0)),
    ("channels", _set("channels", 47)),
    ("num_cells", _set("num_cells", True)),
    ("num_cells", _set("num_cells", 0)),
    ("scale", _set("scale", "2")),
    ("ops", _set("ops", "conv_1x1")),
    ("ops", _set("ops", [])),
    ("inputs", _set("inputs", {"3": [1, 2]})),
    ("inputs[0]", _set_item("inputs", 0, [1.0, 2])),
    ("inputs[0]", _set_item("inputs", 0, [True, 2])),
    ("rgb_range", _set("rgb_range", "255")),
    ("rgb_range", _set("rgb_range", -1)),
    ("space", _set("space", 1)),
    ("version", _set("version", "1")),
    # unsupported version / scale / space
    ("version", _set("version", 3)),
    ("scale", _set("scale", 8)),
    ("space", _set("space", "darts")),
]


@pytest.mark.parametrize("key,mutate", MALFORMED, ids=[f"{i}:{k}" for i, (k, _) in enumerate(MALFORMED)])
def test_malformed_genotype_names_file_and_key(tmp_path, key, mutate):
    raw = valid_raw()
    mutate(raw)
    with pytest.raises(ValueError) as err:
        load_raw(tmp_path, raw)
    assert_one_line_error(err, tmp_path / "genotype.yaml", key)


def test_forward_input_message(tmp_path, monkeypatch):
    raw = valid_raw()
    raw["inputs"][2] = [5, 1]
    monkeypatch.chdir(tmp_path)
    Path("genotype.yaml").write_text(yaml.safe_dump(raw))
    with pytest.raises(ValueError) as err:
        load_genotype("genotype.yaml")
    assert str(err.value) == ("genotype.yaml: inputs[2] = [5, 1]: cell 5 takes input from cell 5 or later; "
                              "inputs must point to earlier cells (1..4)")


@pytest.mark.parametrize("text", ["version: [1\n", "- just\n- a list\n", "42\n", "", "a: b: c\n",
                                  "? [1, 2]\n: x\n", "!!python/object:os.system {}\n"])
def test_not_a_genotype_mapping(tmp_path, text):
    with pytest.raises(ValueError) as err:
        load_raw(tmp_path, text)
    assert_one_line_error(err, tmp_path / "genotype.yaml", "")


# ----------------------------------------------------------------------------------------------------
# schema: randomized mutations: every load either gives a valid genotype or raises ValueError

JUNK = [None, True, False, 0, 1, -7, 3, 2**70, 1.5, float("nan"), "", "x", "conv_1x1", "sep_conv_7x7",
        "identity", [], [1], [1, 2], [2, 1], [[1, 2]], ["conv_1x1"] * 3, {"a": 1}, {}, "[1, 2]", "1..4"]
YAML_CHARS = "abc019:-[]{},#&*!|>'\"%@`?. \n\t"


def _random_string(rng: random.Random) -> str:
    return "".join(rng.choice(YAML_CHARS + "xyz_") for _ in range(rng.randint(0, 8)))


def _mutate(raw: dict, rng: random.Random) -> None:
    kind = rng.randrange(8)
    key = rng.choice(list(raw)) if raw else "version"
    if kind == 0 and raw:
        del raw[key]
    elif kind == 1:
        raw[key] = copy.deepcopy(rng.choice(JUNK + [_random_string(rng)]))
    elif kind == 2:
        raw[rng.choice(["cells", "cell", "depth", _random_string(rng)])] = copy.deepcopy(rng.choice(JUNK))
    elif kind == 3 and isinstance(raw.get("inputs"), list) and raw["inputs"]:
        pair = rng.choice(raw["inputs"])
        if isinstance(pair, list) and pair:
            pair[rng.randrange(len(pair))] = rng.randint(-3, 9)
        else:
            raw["inputs"][0] = [rng.randint(-3, 9) for _ in range(rng.randint(0, 3))]
    elif kind == 4:
        for k in ("ops", "cell"):
            if isinstance(raw.get(k), list) and raw[k]:
                raw[k][rng.randrange(len(raw[k]))] = rng.choice([_random_string(rng), *OPS, 5, None])
    elif kind == 5:
        raw[rng.choice(["channels", "num_cells", "scale", "version", "rgb_range"])] = rng.randint(-2, 64)
    else:  # changes that may well keep the genotype valid
        choice = rng.randrange(4)
        if choice == 0 and isinstance(raw.get("inputs"), list) and raw["inputs"]:
            i = rng.randrange(len(raw["inputs"]))
            raw["inputs"][i] = rng.sample(range(1, i + 3), 2)
        elif choice == 1 and isinstance(raw.get("cell"), list) and isinstance(raw.get("ops"), list):
            raw["cell"] = [rng.choice(raw["ops"]) for _ in range(3)]
        elif choice == 2:
            raw["rgb_range"] = rng.choice([1, 255, 1.0, 0.5, rng.uniform(0, 300)])
        else:
            raw[rng.choice(["channels", "scale"])] = rng.choice([2, 3, 4, 8, 16, 48])


def _mutate_text(text: str, rng: random.Random) -> str:
    chars = list(text)
    for _ in range(rng.randint(1, 3)):
        i = rng.randrange(len(chars) + 1)
        op = rng.randrange(3)
        if op == 0:
            chars.insert(i, rng.choice(YAML_CHARS))
        elif chars and i < len(chars):
            if op == 1:
                del chars[i]
            else:
                chars[i] = rng.choice(YAML_CHARS)
    return "".join(chars)


def test_randomized_mutations_raise_only_value_error(tmp_path):
    rng = random.Random(1234)
    base = valid_raw()
    ok = failed = 0
    for case in range(200):
        raw = copy.deepcopy(base)
        for _ in range(rng.randint(1, 3)):
            _mutate(raw, rng)
        try:
            text = yaml.safe_dump(raw, sort_keys=False, default_flow_style=None)
        except yaml.YAMLError:
            continue
        if case % 2:
            text = _mutate_text(text, rng)
        path = tmp_path / f"case{case}.yaml"
        path.write_text(text)
        try:
            g = load_genotype(path)
        except ValueError as e:
            assert "\n" not in str(e) and str(e).startswith(f"{path}: "), str(e)
            failed += 1
        else:
            assert isinstance(g, Genotype) and validate(g.to_dict()) == g
            ok += 1
    assert failed > 100 and ok > 5, (ok, failed)


# ----------------------------------------------------------------------------------------------------
# ops, cell and network


@pytest.mark.parametrize("name", list(OPS))
def test_every_op_keeps_shape(name):
    op = OPS[name](8)
    x = torch.randn(2, 8, 13, 11)
    assert op(x).shape == x.shape


def test_unknown_op_lists_known_ones():
    with pytest.raises(ValueError) as err:
        build_op("sep_conv_9x9", 8)
    msg = str(err.value)
    assert "\n" not in msg and "sep_conv_9x9" in msg and all(name in msg for name in OPS)


@pytest.mark.parametrize("k", [3, 5])
def test_rep_conv_fuses_exactly(k):
    torch.manual_seed(0)
    op = OPS[f"rep_conv_{k}x{k}"](8)
    assert isinstance(op, RepConv)
    for p in op.parameters():
        torch.nn.init.normal_(p, std=0.2)
    fused = op.fuse()
    assert isinstance(fused, torch.nn.Conv2d) and fused.kernel_size == (k, k)
    x = torch.randn(2, 8, 17, 19)
    with torch.no_grad():
        torch.testing.assert_close(fused(x), op(x), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_network_output_size(tmp_path, scale):
    raw = valid_raw()
    raw.update(scale=scale, channels=8, num_cells=4, ops=list(OPS), inputs=[[2, 1], [1, 3]], rgb_range=1)
    del raw["cell"]
    raw["cells"] = [["rep_conv_3x3", "identity", "dil_conv_5x5"],
                    ["conv_3x3", "sep_conv_3x3", "conv_1x1"],
                    ["conv_5x5", "dil_conv_3x3", "rep_conv_5x5"],
                    ["conv_7x7", "sep_conv_5x5", "sep_conv_7x7"]]
    net = build_network(load_raw(tmp_path, raw)).eval()
    assert net.genotype.scale == scale
    with torch.no_grad():
        y = net(torch.rand(1, 3, 16, 18))
    assert y.shape == (1, 3, 16 * scale, 18 * scale)


def test_dlsr_x2_layout_matches_checkpoint_shape():
    """Without the checkpoint: DLSR x2 has 214 state-dict tensors and 322,620 parameters."""
    net = build_network("dlsr_x2")
    sd = net.state_dict()
    assert len(sd) == 214 and sum(p.numel() for p in net.parameters()) == 322_620
    for key in ("B1.c1_r.op.0.weight", "B6.c2_r.op.5.weight", "B3.c3_r.op.1.weight", "B2.esa.conv3_.bias",
                "c6.0.weight", "cout.0.weight", "LR_conv.bias", "upsampler.0.weight"):
        assert key in sd, key
    assert net.rgb_range == 255.0
