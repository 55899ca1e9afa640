; ctxd tags query for Bash (the grammar ships none): function definitions, and every command name
; as a call reference so that scripts calling each other's functions are linked. Variable
; assignments are not definitions here: short names like `s` and `x` would link unrelated files.

(function_definition name: (word) @name) @definition.function
(command name: (command_name (word) @name)) @reference.call
