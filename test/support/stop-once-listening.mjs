// Loaded with `node --import` (through NODE_OPTIONS): a process whose script's path ends with
// STOP_ONCE_LISTENING_SCRIPT stops itself with SIGSTOP as soon as it listens on the port in STOP_ONCE_LISTENING_ON, as a process stopped or
// wedged there would be: the kernel takes connections to that port, and nothing answers them.
import { Server } from "node:net";

const port = Number(process.env.STOP_ONCE_LISTENING_ON);
if (process.argv[1]?.endsWith(process.env.STOP_ONCE_LISTENING_SCRIPT || "\0")) {
  const listen = Server.prototype.listen;
  Server.prototype.listen = function (...args) {
    this.once("listening", () => {
      if (this.address()?.port === port) process.kill(process.pid, "SIGSTOP");
    });
    return listen.apply(this, args);
  };
}
