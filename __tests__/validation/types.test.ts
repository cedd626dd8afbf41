import { resolve } from 'node:path';
import ts from 'typescript';

describe('public option types', () => {
  it('compile under exactOptionalPropertyTypes: options set to undefined, numeric user ids, a run-time failFast', () => {
    const file = resolve(__dirname, 'fixtures/exact-optional.ts');
    const program = ts.createProgram([file], {
      strict: true,
      exactOptionalPropertyTypes: true,
      noUncheckedIndexedAccess: true,
      noEmit: true,
      skipLibCheck: true,
      esModuleInterop: true,
      target: ts.ScriptTarget.ES2022,
      module: ts.ModuleKind.CommonJS,
      moduleResolution: ts.ModuleResolutionKind.Node10,
      types: ['node'],
    });
    // Only the user's file: the kit's own sources are checked by the project's tsconfig.
    const diagnostics = ts.getPreEmitDiagnostics(program, program.getSourceFile(file));
    const messages = diagnostics.map((d) => ts.flattenDiagnosticMessageText(d.messageText, '\n'));
    expect(messages).toEqual([]);
  }, 60_000);
});
