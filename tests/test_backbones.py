"""Every registered backbone at every size honours the backbone interface.

Cases come from the plugin registry (one per backbone and value of its
``Config.size``), so a new backbone is tested as soon as it is registered.
"""

from __future__ import annotations

import typing
from typing import Literal

import pytest
import torch
import torch.nn.functional as F

from harness.api import Backbone, Encoded
from harness.registry.config import build_dataclass
from harness.registry.plugins import load_plugins

BATCH = 2
CLASSES = 5
SECONDS = 0.5
CHEAP_SIZES = (None, "tiny")
"""Sizes at which the freezing tests also run a backward pass (larger ones only check flags)."""


def sizes_of(cls: type) -> list[str | None]:
    """The values of ``Config.size`` (``[None]`` for a backbone without sizes)."""
    hint = typing.get_type_hints(cls.Config).get("size")
    if hint is not None and typing.get_origin(hint) is Literal:
        return list(typing.get_args(hint))
    return [None]


REGISTRY = load_plugins()["backbone"]
CASES = [(entry.name, size) for entry in REGISTRY for size in sizes_of(entry.cls)]


@pytest.fixture(scope="module", params=CASES, ids=[f"{name}-{size}" for name, size in CASES])
def case(request) -> tuple[Backbone, torch.Tensor]:
    """A backbone built through its validated Config, and features of 0.5 s of noise."""
    name, size = request.param
    cls = REGISTRY.get(name).cls
    config = build_dataclass(cls.Config, {} if size is None else {"size": size}, "backbone")
    torch.manual_seed(0)
    model = cls(config)
    samples = int(SECONDS * model.sample_rate)
    wave = torch.randn(BATCH, samples, generator=torch.Generator().manual_seed(1)) * 0.1
    frontend = model.frontend().eval()
    with torch.no_grad():
        features = frontend(wave)
    return model, features, size


@pytest.fixture
def backbone(case) -> tuple[Backbone, torch.Tensor]:
    model, features, _ = case
    model.zero_grad(set_to_none=True)
    for param in model.parameters():
        param.requires_grad_(True)
    return model, features


def train_step(model: Backbone, features: torch.Tensor) -> Encoded:
    model.train()
    encoded = model(features)
    head = model.build_head(CLASSES)
    logits = head(encoded)
    assert logits.shape == (BATCH, CLASSES)
    loss = F.cross_entropy(logits, torch.arange(BATCH) % CLASSES)
    # the token term reaches parameters only the tokens depend on (e.g. a norm beside fc_norm)
    (loss + 1e-3 * encoded.tokens.pow(2).mean()).backward()
    return encoded


def test_forward_backward_and_shapes(backbone) -> None:
    """One training step; every parameter must receive a finite gradient."""
    model, features = backbone
    encoded = train_step(model, features)
    dim = model.embed_dim
    assert encoded.embedding.shape == (BATCH, dim)
    assert encoded.tokens.ndim == 3 and encoded.tokens.shape[0] == BATCH
    assert encoded.tokens.shape[2] == dim
    assert torch.isfinite(encoded.embedding).all() and torch.isfinite(encoded.tokens).all()
    no_grad = [n for n, p in model.named_parameters() if p.grad is None]
    assert not no_grad, f"parameters without a gradient: {no_grad[:5]}"
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())


def test_frontend_declares_rate_and_time_axis(case) -> None:
    model, features, _ = case
    assert isinstance(model.sample_rate, int) and model.sample_rate > 0
    assert features.ndim == 4 and features.shape[:2] == (BATCH, 1)
    assert model.time_axis in (-1, -2)


def test_eval_is_deterministic_and_embed_matches_forward(backbone) -> None:
    model, features = backbone
    model.eval()
    with torch.no_grad():
        first = model(features[:1])
        again = model.embed(features[:1])
    assert torch.equal(first.embedding, again)


def is_parameter_free(model: Backbone) -> bool:
    """A floor baseline (e.g. logmel-stats): no parameters, no blocks, nothing to freeze."""
    return model.num_layers == 0


def test_parameter_free_backbones_have_nothing_to_train(backbone) -> None:
    model, _ = backbone
    if not is_parameter_free(model):
        assert list(model.parameters()), "a backbone with blocks must have parameters"
        return
    assert not list(model.parameters())
    model.freeze_all_but_top(0)
    assert model.param_groups(lr=1.0, layer_decay=0.5) == []


def test_layers_and_layer_of(backbone) -> None:
    model, _ = backbone
    if is_parameter_free(model):
        pytest.skip("no blocks")
    layers = model.num_layers
    assert layers == len(model.blocks) >= 1
    seen = {model.layer_of(name) for name, _ in model.named_parameters()}
    assert seen <= set(range(layers + 2))
    assert set(range(1, layers + 1)) <= seen
    assert 0 in seen, "no parameter below the first block (stem_prefixes?)"
    for name, _ in model.named_parameters():
        if name.startswith("blocks."):
            assert model.layer_of(name) == int(name.split(".")[1]) + 1


@pytest.mark.parametrize("top", [0, 1, "all"])
def test_freeze_all_but_top(backbone, case, top) -> None:
    model, features = backbone
    if is_parameter_free(model):
        pytest.skip("no blocks")
    n = model.num_layers if top == "all" else top
    model.freeze_all_but_top(n)
    lowest = model.num_layers - n + 1
    for name, param in model.named_parameters():
        assert param.requires_grad == (model.layer_of(name) >= lowest), name
    blocks = [p for block in model.blocks for p in block.parameters()]
    if top == "all":
        assert all(p.requires_grad for p in blocks)
        stem = [p for name, p in model.named_parameters() if model.layer_of(name) == 0]
        assert stem and not any(p.requires_grad for p in stem)
        return
    if case[2] not in CHEAP_SIZES:
        return
    train_step(model, features)
    frozen = [p for p in model.parameters() if not p.requires_grad]
    assert frozen and all(p.grad is None for p in frozen)
    last_block = list(model.blocks[-1].parameters())
    assert all(p.requires_grad == (n >= 1) for p in last_block)
    if n >= 1:
        assert all(p.grad is not None for p in last_block)


def test_param_groups_with_layer_decay(backbone) -> None:
    model, _ = backbone
    if is_parameter_free(model):
        pytest.skip("no blocks")
    model.freeze_all_but_top(1)
    groups = model.param_groups(lr=1.0, layer_decay=0.5, weight_decay=0.05)
    top = model.num_layers + 1
    grouped = [id(p) for g in groups for p in g["params"]]
    trainable = [id(p) for p in model.parameters() if p.requires_grad]
    assert sorted(grouped) == sorted(trainable)
    assert len(set(grouped)) == len(grouped)
    names = {id(p): n for n, p in model.named_parameters()}
    for group in groups:
        assert group["lr"] == pytest.approx(0.5 ** (top - group["layer"]))
        for param in group["params"]:
            assert model.layer_of(names[id(param)]) == group["layer"]
            if param.ndim == 1:
                assert group["weight_decay"] == 0.0, names[id(param)]

    for param in model.parameters():
        param.requires_grad_(True)
    layers = {g["layer"] for g in model.param_groups(lr=1.0, layer_decay=0.5)}
    assert layers == set(range(top + 1)) or layers == set(range(top))
    optimizer = torch.optim.AdamW(model.param_groups(lr=1e-3, layer_decay=0.75))
    assert len(optimizer.param_groups) >= model.num_layers


SIZED = [
    (entry.name, sizes_of(entry.cls))
    for entry in REGISTRY
    if len(sizes_of(entry.cls)) > 1 and "checkpoint" in entry.cls.Config.__dataclass_fields__
]


@pytest.mark.parametrize(("name", "sizes"), SIZED, ids=[name for name, _ in SIZED])
def test_checkpoint_of_another_size_names_the_right_size(tmp_path, name, sizes) -> None:
    """Every sized backbone: a checkpoint of its smallest size refuses to load into the next
    size with one line naming the size that fits."""
    from harness.registry.checkpoints import load_backbone_checkpoint
    from harness.util.errors import HarnessError

    cls = REGISTRY.get(name).cls
    small, other = sizes[0], sizes[1]
    with torch.device("cpu"):
        source = cls(build_dataclass(cls.Config, {"size": small}, "backbone"))
    export = getattr(source, "published_checkpoint", None)
    path = tmp_path / "other-size.pt"
    torch.save(export() if export else source.state_dict(), path)
    target = cls(build_dataclass(cls.Config, {"size": other}, "backbone"))
    with pytest.raises(HarnessError) as err:
        load_backbone_checkpoint(target, path, num_classes=CLASSES)
    message = str(err.value)
    assert "\n" not in message
    assert f"backbone.size={small}" in message, message


def test_optional_contracts_are_declared_by_the_api_with_neutral_defaults():
    """Checkpoint adaptation, listing lines and the pretrained head are Backbone methods and
    attributes (no getattr probing); the masked-encoder contract is a runtime protocol."""
    from harness.api import MaskedBackbone

    plain = Backbone(None)
    state = {"w": torch.ones(2)}
    assert plain.adapt_state_dict(state) == state and plain.adapt_state_dict(state) is not state
    assert plain.check_checkpoint({"anything": 1}) is None
    assert Backbone.describe_extra() == [] and tuple(plain.load_notes) == ()
    assert plain.pretrained_head_state is None
    masked = {entry.name for entry in REGISTRY if isinstance(build(entry.name), MaskedBackbone)}
    assert masked == {"audiomae"}


def build(name: str) -> Backbone:
    cls = REGISTRY.get(name).cls
    values = {"size": "tiny"} if "tiny" in sizes_of(cls) else {}
    return cls(build_dataclass(cls.Config, values, f"backbone.{name}"))
