// asl-validator 4 ships no type declarations; this is the part the tests use.
declare module "asl-validator" {
  interface ValidationResult {
    readonly isValid: boolean;
    readonly errors: readonly unknown[];
    errorsText(separator?: string): string;
  }
  function aslValidator(
    definition: unknown,
    options?: { checkPaths?: boolean; checkArn?: boolean },
  ): ValidationResult;
  export default aslValidator;
}
