// Validate SARIF logs against the official SARIF 2.1.0 JSON schema (draft-04, as published by
// Microsoft/OASIS and shipped in @microsoft/jest-sarif) with ajv. Usage: node validate.js FILE...
// Prints "ok FILE" per valid file, the ajv errors otherwise; exit 0 only when every file is valid.
'use strict';
const fs = require('fs');
const path = require('path');
const Ajv = require('ajv-draft-04');

const schemaPath = path.join(__dirname, 'node_modules', '@microsoft', 'jest-sarif', 'lib', 'schemas',
                             'sarif-2.1.0-rtm.5.json');
const schema = JSON.parse(fs.readFileSync(schemaPath, 'utf8'));
// strict: false: the official schema has keywords ajv's strict mode rejects (draft-04 "id").
// unicodeRegExp: false: its language pattern ("^[a-zA-Z]{2}|^[a-zA-Z]{2}-[a-zA-Z]{2}]?$") is a
// valid ECMAScript pattern only without the u flag, as the schema was written for.
const ajv = new Ajv({ allErrors: true, strict: false, validateFormats: true, unicodeRegExp: false });
// The schema's formats: RFC 3986 URI and URI reference, RFC 3339 date-time.
ajv.addFormat('uri', (s) => /^[A-Za-z][A-Za-z0-9+.-]*:[^\s]*$/.test(s) && !/[^\x21-\x7e]/.test(s));
ajv.addFormat('uri-reference', (s) => !/[^\x21-\x7e]/.test(s) && !/%(?![0-9A-Fa-f]{2})/.test(s));
ajv.addFormat('date-time', (s) => !Number.isNaN(Date.parse(s)));
const validate = ajv.compile(schema);

let bad = 0;
const files = process.argv.slice(2);
if (files.length === 0) {
  console.error('usage: node validate.js FILE...');
  process.exit(2);
}
for (const f of files) {
  let doc;
  try {
    doc = JSON.parse(fs.readFileSync(f, 'utf8'));
  } catch (e) {
    console.log(`invalid ${f}: not JSON: ${e.message}`);
    bad++;
    continue;
  }
  if (validate(doc)) {
    console.log(`ok ${f}`);
  } else {
    bad++;
    console.log(`invalid ${f}:`);
    for (const e of validate.errors) console.log(`  ${e.instancePath || '/'} ${e.message} ${JSON.stringify(e.params)}`);
  }
}
process.exit(bad ? 1 : 0);
