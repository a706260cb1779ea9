"""The comparison benchmark: TCP against UDP on the same work (``python -m bench``).

The tool starts each server as a subprocess on loopback, drives it with
load-generating clients that speak the project's framed protocol, and reports
delivered messages per second, end-to-end latency, delivery ratio, duplicates,
reordering and the server's CPU, memory and threads.

Where things live:

- ``payload``: the 64-byte message text that carries sender, sequence number
  and send time, and the fixed frame shapes the hot path recognises;
- ``accounting``: the offline pass over what each receiver got (pure);
- ``stats``: percentiles, medians and summaries (pure);
- ``results``: the result records, their JSON and the stdout table (pure);
- ``procstat``: CPU time, peak RSS and threads read from ``/proc``;
- ``servers``: starting and stopping servers and the lossy proxy;
- ``load``: the multiplexed load generator (one process, ``epoll``);
- ``scenarios``: what each scenario asks for, full and ``--quick``;
- ``runner`` and ``cli``: putting it together; ``plot``: the PNG.
"""
