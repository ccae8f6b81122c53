"""The page as a newcomer meets it: a hint where the picture will be, an error in sight, and a
refused upload never quietly replaced by the sample face."""

from __future__ import annotations

import time

from .conftest import H, W, node_sessions, open_page, start_node, wait_playing

UPLOAD_NOT_A_PHOTO = """
(() => {
  const files = new DataTransfer();
  files.items.add(new File([new Uint8Array(4000).fill(7)], "holiday.jpg", {type: "image/jpeg"}));
  const input = document.getElementById('photo');
  input.files = files.files;
  input.onchange();
  return true;
})()
"""

IN_VIEW = """
(() => {
  const box = document.getElementById('error').getBoundingClientRect();
  return box.height > 0 && box.top >= 0 && box.bottom <= window.innerHeight;
})()
"""


def test_a_refused_upload_is_in_sight_and_start_does_not_swap_in_the_sample(browser):
    with start_node() as node:
        page, _ = open_page(browser, node.web_url + f"?size={W}x{H}")
        page.wait("document.getElementById('state').textContent === 'idle'", 20, "the page's info")
        assert page.evaluate("!document.getElementById('hint').hidden && "
                             "document.getElementById('hint').textContent.includes('Start')")

        page.evaluate(UPLOAD_NOT_A_PHOTO)
        page.wait("document.getElementById('photo-note').textContent.startsWith('refused')", 20, "the refusal")
        assert page.evaluate(IN_VIEW), "the upload's error is out of sight"

        page.evaluate("document.getElementById('start').click(); true")
        message = page.wait("document.getElementById('error').textContent.includes('press Start again') && "
                            "document.getElementById('error').textContent", 10, "the warning")
        assert "holiday.jpg" in message and "refused" in message, message
        time.sleep(1.0)
        assert node_sessions(node) == (0, 0), "Start used the sample face after a refused upload"

        page.evaluate("document.getElementById('start').click(); true")  # now the sample, as asked
        wait_playing(page)
        assert page.evaluate("document.getElementById('hint').hidden")
        assert node_sessions(node) == (1, 1)
