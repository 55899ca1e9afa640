; ctxd additions to upstream's Python tags.scm: methods, imports and type annotations as references,
; so modules that import each other are linked even where no call names the imported symbol.

(class_definition body: (block (function_definition name: (identifier) @name) @definition.method))
(import_from_statement name: (dotted_name (identifier) @name)) @reference.import
(import_from_statement name: (aliased_import name: (dotted_name (identifier) @name))) @reference.import
(type (identifier) @name) @reference.type
(attribute attribute: (identifier) @name) @reference.field
(identifier) @name @reference.identifier
