"""The OpenCV window of the stream and its keys (shown from the main thread by the pipeline).

Keys: ``q`` or Esc quits; ``p`` or Enter starts typing a new phrase in the window (Enter
applies it, Esc cancels, Backspace deletes).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

__all__ = ["KeyAction", "WindowDisplay"]


@dataclass(frozen=True)
class KeyAction:
    """What a key press in the window asks for: ``kind`` is ``"quit"`` or ``"phrase"``."""

    kind: str
    phrase: str = ""


class WindowDisplay:
    """An OpenCV window shown from the MAIN thread by :meth:`Pipeline.run`.

    Keys: ``q`` or Esc quits; ``p`` or Enter starts typing a new phrase in the window (Enter
    applies it, Esc cancels, Backspace deletes).

    Args:
        title: Window title.
    """

    ESC = 27
    ENTER = (10, 13)
    BACKSPACE = (8, 127)

    def __init__(self, title: str = "HINet-stream") -> None:
        self.title = title
        self.typing: str | None = None  # the phrase being typed, None when not typing
        self.message = ""
        self._opened = False

    def handle_key(self, key: int) -> KeyAction | None:
        """Update the typing state for one key code (``cv2.waitKey`` value, -1 for none)."""
        if key < 0:
            return None
        key &= 0xFF
        if self.typing is None:
            if key in (ord("q"), self.ESC):
                return KeyAction("quit")
            if key == ord("p") or key in self.ENTER:
                self.typing = ""
            return None
        if key == self.ESC:
            self.typing = None
        elif key in self.ENTER:
            phrase, self.typing = self.typing, None
            if phrase.strip():
                return KeyAction("phrase", phrase)
        elif key in self.BACKSPACE:
            self.typing = self.typing[:-1]
        elif 32 <= key < 127:
            self.typing += chr(key)
        return None

    def show(self, image: np.ndarray) -> None:
        """Show ``image`` (plus the phrase being typed, if any)."""
        if self.typing is not None or self.message:
            image = image.copy()
            extra = [f"new phrase: {self.typing}_"] if self.typing is not None else []
            if self.message:
                extra.append(self.message)
            h = image.shape[0]
            for i, text in enumerate(reversed(extra)):
                y = h - 10 - i * 22
                cv2.putText(image, text, (8, y), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (0, 0, 0), 3)
                cv2.putText(image, text, (8, y), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (255, 255, 255), 1)
        cv2.imshow(self.title, image)
        self._opened = True

    def poll(self) -> KeyAction | None:
        """Pump the window's events for ~1 ms and return the action of a pressed key.

        HighGUI returns one key per call: keys pressed faster than the frame loop polls (a slow
        stream) can merge, and only the last of them arrives.
        """
        if not self._opened:
            return None
        return self.handle_key(cv2.waitKey(1))

    def close(self) -> None:
        """Release resources. Idempotent."""
        if self._opened:
            cv2.destroyWindow(self.title)
            self._opened = False
