/**
 * The two SSM Command documents the Snapshot task runs to freeze and thaw file systems
 * (adapters/ssm-freeze.ts has their content and parameter patterns). The Snapshot role may run only
 * these documents, and only on the instances of groups with `freeze.enabled`.
 */
import * as ssm from "aws-cdk-lib/aws-ssm";
import { Construct } from "constructs";
import { freezeDocument, thawDocument } from "#adapters/ssm-freeze.ts";

export class FreezeDocuments extends Construct {
  /** `fsfreeze -f` with the instance-side auto-thaw; refuses to run after its deadline. */
  readonly freeze: ssm.CfnDocument;
  /** `fsfreeze -u` and stop the auto-thaw. */
  readonly thaw: ssm.CfnDocument;

  constructor(scope: Construct, id: string) {
    super(scope, id);
    // No fixed names: CloudFormation names them, and a content change replaces the document.
    this.freeze = new ssm.CfnDocument(this, "Freeze", {
      documentType: "Command",
      documentFormat: "JSON",
      content: freezeDocument(),
    });
    this.thaw = new ssm.CfnDocument(this, "Thaw", {
      documentType: "Command",
      documentFormat: "JSON",
      content: thawDocument(),
    });
  }
}
