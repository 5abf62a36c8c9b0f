// Guard: the suite must run on the project's pinned Node (the `node` devDependency), not the system one.
const major = Number(process.versions.node.split(".")[0]);
if (major < 24) {
  console.error(
    `cgmirror needs Node >= 24 (found ${process.versions.node}). Run it through npm scripts, which put the pinned node from node_modules/.bin first on PATH.`,
  );
  process.exit(1);
}
