"""A state read racing a terminate and a re-create of the same id (the hardening
suite's mixed operations): the id's directory vanished and came back between the
read's two looks. That is the new container, never one "whose creation did not finish"."""

from __future__ import annotations

from pathlib import Path

import pytest

from execdriver import state as state_mod
from execdriver.state import StateStore


def test_a_directory_put_back_between_two_looks_is_read_again(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    store = StateStore(tmp_path)
    store.create("c1", "native")
    real = state_mod.read_bytes
    calls = []

    def first_missing(path: str) -> bytes:
        calls.append(path)
        if len(calls) == 1:     # what the reader saw while the directory was away
            raise FileNotFoundError(path)
        return real(path)
    monkeypatch.setattr(state_mod, "read_bytes", first_missing)
    st = store.read("c1")
    assert (st.driver, len(calls)) == ("native", 2)


def test_a_directory_claimed_and_never_written_reads_as_creating(tmp_path: Path) -> None:
    (tmp_path / "half").mkdir()
    st = StateStore(tmp_path).read("half")
    assert (st.driver, st.status) == ("", "creating")
