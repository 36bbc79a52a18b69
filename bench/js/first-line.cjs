'use strict';
// Prints one line as soon as the script runs: the benchmark times pii's start to this line.
process.stdout.write('FIRST-LINE ' + process.cwd() + '\n');
