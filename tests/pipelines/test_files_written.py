"""Files the package writes: atomic writes keep a plain file's permissions and follow links; the HTML player survives
generated text that holds `</script>`."""

from __future__ import annotations

import json
import os
import re
import stat

from transformers_mdlm.file_utils import atomic_write_text
from transformers_mdlm.visualization import render_html


def test_atomic_writes_get_a_plain_files_permissions_and_follow_a_link(tmp_path):
    plain = tmp_path / "plain.json"
    plain.write_text("x")
    atomic_write_text(tmp_path / "report.json", "{}")
    assert stat.S_IMODE(os.stat(tmp_path / "report.json").st_mode) == stat.S_IMODE(os.stat(plain).st_mode)  # not 0o600
    os.chmod(plain, 0o640)
    atomic_write_text(plain, "y")
    assert stat.S_IMODE(os.stat(plain).st_mode) == 0o640 and plain.read_text() == "y"
    link = tmp_path / "link.json"
    link.symlink_to(plain)
    atomic_write_text(link, "z")
    assert link.is_symlink() and plain.read_text() == "z"
    assert not list(tmp_path.glob(".*.tmp"))


def test_the_html_player_keeps_generated_script_tags_inside_its_data(tmp_path):
    page_path = tmp_path / "history.html"
    frames = ["<mask> <mask>", "Kod: </script><script>alert(1)</script> <mask>", "Kod: </script> bitti"]
    assert render_html(frames, page_path) == 3
    page = page_path.read_text()
    assert page.count("</script>") == 1  # only the player's own
    data = re.search(r"const frames = (\[.*?\]);", page).group(1)
    assert json.loads(data) == [frame.strip() for frame in frames]
