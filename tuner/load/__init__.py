"""Load generation, the only async code: a channel (`channel`), the request and its checks
(`request`), what load to offer (`spec`, `schedule`), one process's sends (`engine`), the load
sources behind one interface (`source`: in process; `pool`: a process pool; `raypool`: Ray
actors; `worker`: what a pool process and an actor run), the point runner (`client`), and the
server's telemetry per window (`telemetry`)."""
