/** The `cgmirror` command (package.json "bin"). Runs on the project's pinned Node 24. */
import { main } from "./main.ts";

process.exitCode = await main(process.argv);
