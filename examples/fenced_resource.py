"""An external resource that takes fencing tokens: it remembers the highest token it has seen
and refuses a write that comes with a lower one. Here a JSON file; a storage service, a queue
or another database would keep the same number beside its data.

Used by examples/fencing.py and tests/standby/failover.py.
"""

import json
import os


class StaleToken(Exception):
    pass


class FencedFile:
    def __init__(self, path):
        self.path = path
        if not os.path.exists(path):
            self._save({"highest_token": 0, "value": None})

    def _load(self):
        with open(self.path) as f:
            return json.load(f)

    def _save(self, state):
        tmp = self.path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(state, f)
        os.replace(tmp, self.path)

    def write(self, token, value):
        """Stores value if token is not lower than any token seen; raises StaleToken otherwise.
        (A single process writes here; a shared resource makes this check-and-store atomic.)"""
        state = self._load()
        if token < state["highest_token"]:
            raise StaleToken(f"token {token} < highest seen {state['highest_token']}")
        self._save({"highest_token": token, "value": value})

    def read(self):
        return self._load()
