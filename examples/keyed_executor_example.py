"""KeyedExecutor: ThreadPoolExecutor code, with per-key order by changing one line.

Bank accounts get deposits and withdrawals from many places at once. Each
account's operations must apply one at a time, in the order they were
submitted (a withdrawal must see the deposit before it); different accounts
are independent and run in parallel. The same executor also serves plain
unkeyed calls and an asyncio coroutine through ``loop.run_in_executor``.

Run it::

    python examples/keyed_executor_example.py
"""

from __future__ import annotations

import asyncio
import sys
import threading
from concurrent.futures import as_completed

from fastdispatch import KeyedExecutor

ACCOUNTS = ("alice", "bob", "carol")


class Ledger:
    """Balances plus a log of every operation, per account."""

    def __init__(self) -> None:
        self.balance = dict.fromkeys(ACCOUNTS, 0)
        self.log: dict[str, list[int]] = {a: [] for a in ACCOUNTS}
        self._lock = threading.Lock()  # guards the dicts; per-account order is the executor's

    def apply(self, account: str, amount: int) -> int:
        """Add *amount* (negative: withdraw); refuse to go below zero."""
        with self._lock:
            new = self.balance[account] + amount
            if new < 0:
                raise ValueError(f"{account}: insufficient funds for {amount}")
            self.balance[account] = new
            self.log[account].append(amount)
            return new


def main(echo: bool = True, rounds: int = 50) -> dict[str, list[int]]:
    """Run the example; return each account's log of applied amounts."""
    ledger = Ledger()
    # The one-line change: was `with ThreadPoolExecutor(max_workers=4) as ex:`
    with KeyedExecutor(max_workers=4) as ex:
        futures = []
        for _ in range(rounds):
            for account in ACCOUNTS:
                # Deposit then withdraw: same key, so the withdrawal always sees the deposit.
                futures.append(ex.submit_keyed(account, ledger.apply, account, 10))
                futures.append(ex.submit_keyed(account, ledger.apply, account, -10))
        # Unkeyed calls run as ThreadPoolExecutor runs them.
        total = ex.submit(lambda: sum(len(v) for v in ledger.log.values()))

        async def audit() -> int:
            # A view for APIs that take an Executor: its calls run under one key.
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(ex.for_key("alice"), ledger.apply, "alice", 5)

        alice_after_audit = asyncio.run(audit())
        failures = [f for f in as_completed(futures) if f.exception() is not None]
        total.result()
    # Leaving the block waited for every call, like ThreadPoolExecutor's.
    assert not failures, failures  # no withdrawal ever ran before its deposit
    if echo:
        for account in ACCOUNTS:
            ops, balance = len(ledger.log[account]), ledger.balance[account]
            print(f"{account}: {ops} operations, balance {balance}")
        print(f"alice after the audit deposit: {alice_after_audit}")
    return ledger.log


if __name__ == "__main__":
    log = main()
    ok = all(log[a][:2] == [10, -10] for a in ACCOUNTS)
    sys.exit(0 if ok else 1)
