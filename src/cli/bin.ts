#!/usr/bin/env node
import { main } from './main.js';

// `mistral-ref … | head` closes the pipe early: that ends the output, it is not an error
// worth a stack trace.
process.stdout.on('error', (e: NodeJS.ErrnoException) => {
  if (e.code === 'EPIPE') process.exit(process.exitCode ?? 0);
  throw e;
});

process.exitCode = await main(process.argv.slice(2));
