"""``train.keep_freed_memory`` (:mod:`cellcube.train.memory`): inside
:func:`freed_memory_kept` freed tensor memory is reused without page faults; outside it, and
on leaving, the heap is trimmed; training uses it unless the config says not to."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from cellcube.config import load_config

# Allocates and frees a 32 MiB tensor, writing it, 23 times, plainly and then inside
# freed_memory_kept; counts the minor page faults of the last 10 rounds of each (the heap grows in
# the first ones), and the resident memory before, inside and after.
ROUNDS = """
import json, resource, torch
from cellcube.train.memory import freed_memory_kept
def faults():
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for i in range(23):
        if i == 13:
            before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        torch.empty(2**23).fill_(1.0)
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
def rss():
    return int(open("/proc/self/statm").read().split()[1]) * 4096
out = {"plain": faults(), "rss_before": rss()}
with freed_memory_kept() as kept:
    out["kept"], out["took"], out["rss_inside"] = faults(), kept, rss()
out["rss_after"] = rss()
print(json.dumps(out))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc only")
def test_freed_memory_is_reused_without_page_faults_inside_only():
    run = subprocess.run([sys.executable, "-c", ROUNDS], capture_output=True, text=True, check=True)
    got = json.loads(run.stdout.splitlines()[-1])
    pages = 10 * 2**25 // 4096  # 10 rounds of 32 MiB in 4 KiB pages
    assert got["took"] is True
    assert got["plain"] > pages // 2  # faulted in every time
    assert got["kept"] < pages // 100
    # the kept heap holds several freed blocks; leaving trims it
    assert got["rss_inside"] > got["rss_before"] + 2**25
    assert got["rss_after"] < got["rss_before"] + 2**24


def test_training_keeps_freed_memory_unless_told_not_to():
    assert load_config(None, []).train.keep_freed_memory is True
    assert not load_config(None, ["train.keep_freed_memory=false"]).train.keep_freed_memory
