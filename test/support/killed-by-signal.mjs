// A bench worker (bench/lib/proc.ts `runWorker`) that ends by SIGKILL before it reports anything, as one the
// kernel's OOM killer took would.
process.kill(process.pid, "SIGKILL");
