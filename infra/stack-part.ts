/**
 * A part of the stack a reader can name (the repository, the task functions, the workflows, the
 * schedules, monitoring) that does not move its resources.
 *
 * CloudFormation identifies a resource by its logical id, and CDK derives that id from the construct
 * path below the stack. Moving a resource into a new construct would change its id, and a deployed
 * stack would then replace it: a new empty repository bucket, new keys, new state machines. A
 * `StackPart` is left out of that path, so its resources keep the ids they had when the stack created
 * them directly (test/unit/infra-logical-ids.test.ts holds those ids as a contract).
 */
import { type CfnElement, Names, Stack } from "aws-cdk-lib";
import { Construct } from "constructs";

export abstract class StackPart extends Construct {}

/**
 * The logical id CDK gives `element` when the `StackPart`s between it and its stack are left out of
 * its path, or `undefined` when there is none (then the stack's own allocation applies unchanged).
 */
export function logicalIdWithoutParts(element: CfnElement): string | undefined {
  const scopes = element.node.scopes;
  const below = scopes.slice(scopes.indexOf(Stack.of(element)) + 1);
  if (!below.some((s) => s instanceof StackPart)) return undefined;
  const path = below.filter((s) => !(s instanceof StackPart)).map((s) => s.node.id);
  // CDK's own id algorithm (its public Names API) on a detached path of the same ids.
  let detached: Construct = new Construct(undefined as unknown as Construct, "");
  for (const id of path) detached = new Construct(detached, id);
  return Names.nodeUniqueId(detached.node);
}
