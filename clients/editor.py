"""
The ``chat`` client's line editor on a terminal: prompt_toolkit on Twisted's asyncio reactor.

prompt_toolkit is asyncio-only, so ``chat`` installs ``twisted.internet.asyncioreactor`` before the
reactor is imported, and only when stdin and stdout are a terminal (:func:`clients.cli.main`); pipes
and scripts keep the plain ``StandardIO`` console. Its keys are prompt_toolkit's Emacs mode: Left/Right,
Home/End (Ctrl-A/Ctrl-E), Ctrl-U (delete to the start), Ctrl-W (delete the word before the cursor),
Up/Down through the lines typed this session (passwords are never kept), Tab to complete a name or a
command (:class:`clients.screen.Vocabulary`), Ctrl-D on an empty line to leave, Ctrl-C to interrupt.
``patch_stdout`` prints incoming lines above the line being typed, however many rows it wraps over;
transfer progress bars are drawn in the bottom toolbar.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable, Iterable
from typing import Any

from prompt_toolkit import PromptSession
from prompt_toolkit.completion import CompleteEvent, Completer, Completion
from prompt_toolkit.document import Document
from prompt_toolkit.filters import Condition
from prompt_toolkit.history import InMemoryHistory
from prompt_toolkit.key_binding import KeyBindings, KeyPressEvent
from prompt_toolkit.patch_stdout import patch_stdout
from twisted.internet import defer

from clients.screen import DIM, NORMAL, Vocabulary

#: Bold and reverse video for a line that names the user or a private message (then :data:`NORMAL`).
HIGHLIGHT = "\x1b[1;7m"
BELL = "\x07"


class VocabularyCompleter(Completer):
    """Tab: the words of a :class:`Vocabulary` that the word before the cursor may become."""

    def __init__(self, words: Vocabulary) -> None:
        self.words = words

    def get_completions(self, document: Document, complete_event: CompleteEvent) -> Iterable[Completion]:
        before = document.text_before_cursor
        word = before.split(" ")[-1]
        for found in self.words.complete(before):
            yield Completion(found, start_position=-len(word))


class SessionHistory(InMemoryHistory):
    """The lines typed this session, without those typed at a password prompt (``secret()`` true)."""

    def __init__(self, secret: Callable[[], bool]) -> None:
        super().__init__()
        self._secret = secret

    def append_string(self, string: str) -> None:
        if not self._secret() and string.strip():
            super().append_string(string)


class LineEditor:
    """
    A :class:`clients.screen.Screen` on a terminal. :meth:`start` runs the prompt until :meth:`end`;
    each accepted line goes to ``on_line``, Ctrl-D on an empty line to ``on_eof``, Ctrl-C to ``on_interrupt``.
    """

    interactive = True

    def __init__(self, on_line: Callable[[str], None], on_eof: Callable[[], None],
                 on_interrupt: Callable[[], None], words: Vocabulary, input: Any = None, output: Any = None) -> None:
        self.on_line = on_line
        self.on_eof = on_eof
        self.on_interrupt = on_interrupt
        self.prompt = ""
        self.secret = False
        self._ended = False
        self._last = ""
        #: The transfer progress bar in the bottom toolbar ("" for none).
        self._bar = ""
        self.history = SessionHistory(lambda: self.secret)
        keys = KeyBindings()

        @keys.add("c-c")
        def _interrupt(event: KeyPressEvent) -> None:
            """Ctrl-C: the client says goodbye (through :meth:`end`, which erases the prompt)."""
            self.on_interrupt()

        @keys.add("c-d", filter=Condition(lambda: not self.session.default_buffer.text))
        def _eof(event: KeyPressEvent) -> None:
            """Ctrl-D on an empty line: the end of the input (the client leaves politely, then :meth:`end`)."""
            self.on_eof()

        self.session: PromptSession[str] = PromptSession(
            message=lambda: self.prompt,
            is_password=Condition(lambda: self.secret),
            history=self.history,
            completer=VocabularyCompleter(words),
            complete_while_typing=False,
            key_bindings=keys,
            bottom_toolbar=self.toolbar,
            input=input,
            output=output,
        )
        #: Fires when the prompt has stopped and the last line is written.
        self.finished: defer.Deferred[None] = defer.Deferred()

    def start(self) -> defer.Deferred[None]:
        """Run the prompt (on the asyncio loop the reactor runs); returns :attr:`finished`."""
        future = asyncio.ensure_future(self._run())
        defer.Deferred.fromFuture(future).addBoth(self._done)
        return self.finished

    def _done(self, result: Any) -> None:
        if self._last:
            sys.stdout.write(self._last + "\n")
            sys.stdout.flush()
        self.finished.callback(None)
        if isinstance(result, defer.Failure):
            result.printTraceback(sys.stderr)

    async def _run(self) -> None:
        with patch_stdout(raw=True):
            while not self._ended:
                try:
                    line = await self.session.prompt_async()
                except EOFError:
                    if not self._ended:
                        self.on_eof()
                    continue
                except KeyboardInterrupt:
                    self.on_interrupt()
                    continue
                if self._ended:
                    break
                self.on_line(line)

    # -- Screen ------------------------------------------------------------------------

    def show(self, text: str) -> None:
        print(text, flush=True)

    def alert(self, text: str) -> None:
        print(BELL + HIGHLIGHT + text + NORMAL, flush=True)

    def show_dimmed(self, text: str) -> None:
        print(DIM + text + NORMAL, flush=True)

    def set_prompt(self, prompt: str, secret: bool = False) -> None:
        self.prompt = prompt
        self.secret = secret
        if self.session.app.is_running:
            self.session.app.invalidate()

    def toolbar(self) -> str | None:
        """The bottom toolbar: the latest transfer progress bar, or none."""
        return self._bar or None

    def progress(self, frame: str) -> None:
        """
        Draw a :class:`clients.files.Progress` frame (``\\r\\x1b[K`` and the bar; that prefix alone erases) in the
        bottom toolbar, where it cannot garble the line being typed.
        """
        self._bar = frame.replace("\r\x1b[K", "")
        if self.session.app.is_running:
            self.session.app.invalidate()

    def end(self, text: str = "") -> None:
        """Stop prompting (the prompt and what was typed are erased) and print ``text`` last."""
        if self._ended:
            if text:
                self._last = text
            return
        self._ended = True
        self._last = text
        self.prompt, self.secret, self._bar = "", False, ""
        app = self.session.app
        if app.is_running:
            app.erase_when_done = True
            app.exit(exception=EOFError())
