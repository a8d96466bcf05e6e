"""The attention registry and its entry-point plugins, tested with real installed distributions.

Plugins are real ``*.dist-info`` directories on ``sys.path`` read by ``importlib.metadata``; the
registry is never patched.
"""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import pytest
import torch
from torch import nn

from sna_core._registry import Registry, RegistryError
from sna_core.attention import (
    ATTENTION,
    build_attention,
    get_attention,
    list_attention,
    replaces_conv,
)
from sna_core.attention.registry import broken_attention, reload_attention_plugins

BUILT_INS = ["none", "sna", "se", "eca", "sa", "aa", "cbam"]

PLUGIN_MODULES = ["myplugin_blocks", "myplugin_broken", "myplugin_shadow"]

PLUGIN_SOURCE = '''
"""A third-party attention block, as a separate package would ship it."""
import torch
from torch import nn


class HalfGate(nn.Module):
    def __init__(self, channels, *, factor=0.5):
        super().__init__()
        self.scale = nn.Parameter(torch.full((channels,), factor))

    def forward(self, x):
        return x * self.scale[None, :, None, None]


class SwapConv(nn.Conv2d):
    replaces_conv = True

    def __init__(self, channels=None, *, in_channels=None, out_channels=None, stride=1):
        super().__init__(in_channels or channels, out_channels or channels, 3, stride, 1)


NOT_A_FACTORY = 42
'''


def write_distribution(site: Path, name: str, entry_points: dict[str, str]) -> None:
    """Install a minimal distribution ``name-0.1`` into ``site`` (a directory on sys.path)."""
    dist_info = site / f"{name}-0.1.dist-info"
    dist_info.mkdir()
    (dist_info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1\n")
    lines = "\n".join(f"{key} = {value}" for key, value in entry_points.items())
    (dist_info / "entry_points.txt").write_text(f"[sna_core.attention]\n{lines}\n")


@pytest.fixture
def plugin_site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A site directory with a working module, a broken module and ``myplugin`` declaring both."""
    (tmp_path / "myplugin_blocks.py").write_text(textwrap.dedent(PLUGIN_SOURCE))
    (tmp_path / "myplugin_broken.py").write_text(
        'raise ImportError("myplugin_broken needs the missing package fancy_cuda_ext")\n'
    )
    write_distribution(
        tmp_path,
        "myplugin",
        {
            "half_gate": "myplugin_blocks:HalfGate",
            "swap_conv": "myplugin_blocks:SwapConv",
            "broken_block": "myplugin_broken:Block",
            "not_callable": "myplugin_blocks:NOT_A_FACTORY",
        },
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    reload_attention_plugins()
    yield tmp_path
    monkeypatch.undo()
    for module in PLUGIN_MODULES:
        sys.modules.pop(module, None)
    reload_attention_plugins()


def test_list_contains_none_and_every_built_in() -> None:
    names = list_attention()
    assert set(BUILT_INS) <= set(names)
    assert names == sorted(names)


@pytest.mark.parametrize("name", BUILT_INS)
def test_every_built_in_builds_by_name(name: str) -> None:
    block = build_attention(name, 16)
    x = torch.randn(2, 16, 5, 5)
    assert block(x).shape == x.shape


@pytest.mark.parametrize("name, expected", [(name, name == "aa") for name in BUILT_INS])
def test_replaces_conv(name: str, expected: bool) -> None:
    assert replaces_conv(name) is expected


def test_none_is_identity_and_ignores_keywords() -> None:
    block = build_attention("none", 8, rank_k=2)
    x = torch.randn(1, 8, 3, 3)
    assert block(x) is x


@pytest.mark.parametrize("typo, suggestion", [("sse", "se"), ("cbma", "cbam"), ("ecaa", "eca")])
def test_unknown_name_lists_known_names_and_suggests_closest(typo: str, suggestion: str) -> None:
    with pytest.raises(KeyError) as caught:
        build_attention(typo, 64)
    message = str(caught.value)
    assert repr(typo) in message
    assert f"Did you mean {suggestion!r}?" in message
    for name in BUILT_INS:
        assert name in message


def test_non_string_name_is_rejected_with_known_names() -> None:
    with pytest.raises(RegistryError, match=r"must be a string, got \['se'\].*Known: .*cbam"):
        get_attention(["se"])  # type: ignore[arg-type]


def test_plugin_from_entry_point_builds_by_name(plugin_site: Path) -> None:
    assert {"half_gate", "swap_conv"} <= set(list_attention())
    block = build_attention("half_gate", 4, factor=0.25)
    x = torch.ones(1, 4, 2, 2)
    torch.testing.assert_close(block(x), torch.full_like(x, 0.25))
    assert type(block).__module__ == "myplugin_blocks"


def test_plugin_replacing_a_conv_is_recognised(plugin_site: Path) -> None:
    assert replaces_conv("swap_conv")
    conv = get_attention("swap_conv")(in_channels=4, out_channels=8, stride=2)
    assert conv(torch.randn(1, 4, 6, 6)).shape == (1, 8, 3, 3)


def test_broken_plugin_is_reported_by_name_without_hiding_others(plugin_site: Path) -> None:
    broken = broken_attention()
    assert set(broken) == {"broken_block", "not_callable"}
    assert "fancy_cuda_ext" in broken["broken_block"]
    assert "myplugin_broken:Block" in broken["broken_block"]
    assert "not a class or factory" in broken["not_callable"]

    with pytest.raises(RegistryError, match=r"'broken_block' failed to load: ImportError: .*fancy_cuda_ext"):
        build_attention("broken_block", 4)
    # The working plugin and every built-in are unaffected.
    assert isinstance(build_attention("half_gate", 4), nn.Module)
    assert set(BUILT_INS) <= set(list_attention())
    assert "broken_block" not in list_attention()


def test_unknown_name_error_mentions_broken_plugins(plugin_site: Path) -> None:
    expected = r"Known: .*half_gate.*Broken plugins: broken_block, not_callable"
    with pytest.raises(RegistryError, match=expected):
        build_attention("half_gat_typo", 4)


def test_plugin_cannot_replace_a_built_in(
    plugin_site: Path, tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    other_site = tmp_path_factory.mktemp("shadow_site")
    (other_site / "myplugin_shadow.py").write_text("from torch.nn import Identity as Block\n")
    write_distribution(other_site, "shadowplugin", {"se": "myplugin_shadow:Block"})
    monkeypatch.syspath_prepend(str(other_site))  # undone by plugin_site's teardown
    with pytest.warns(RuntimeWarning, match=r"plugin 'se' .*myplugin_shadow:Block.* already registered"):
        reload_attention_plugins()
    assert type(build_attention("se", 16)).__name__ == "SqueezeExcitation"
    assert "half_gate" in list_attention()


def test_uninstalled_plugin_disappears_on_reload(plugin_site: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert "half_gate" in list_attention()
    monkeypatch.undo()  # takes the plugin's site directory off sys.path
    reload_attention_plugins()
    assert "half_gate" not in list_attention()
    assert broken_attention() == {}
    assert set(BUILT_INS) <= set(list_attention())


def test_registry_rejects_duplicate_and_malformed_names() -> None:
    registry: Registry[type] = Registry("widget")
    registry.add("a", int)
    registry.add("a", int)  # re-registering the same object is harmless (module reloads)
    with pytest.raises(ValueError, match=r"widget 'a' is already registered"):
        registry.add("a", float)
    registry.add("a", float, override=True)
    assert registry.get("a") is float
    with pytest.raises(ValueError, match=r"invalid widget name ' b'"):
        registry.add(" b", int)


def test_attention_registry_is_the_shared_instance() -> None:
    assert ATTENTION.entry_point_group == "sna_core.attention"
    assert get_attention("aa") is ATTENTION.get("aa")
