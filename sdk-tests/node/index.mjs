// Entry point used when a newer Node runs `node --test sdk-tests/node/`: since Node 21 the test
// runner treats the directory as a module (package.json "main") instead of searching it, so this
// file loads every test file. Node 20 searches the directory and runs test/*.test.mjs directly.
import './test/audit-logs.test.mjs';
