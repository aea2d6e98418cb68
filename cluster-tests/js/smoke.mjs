// A smoke test of the AWS SDK for JavaScript v3, unmodified, against a
// Sluice cluster over the AWS wire protocols: SQS (AWS JSON 1.0), SNS and
// STS (query), Kinesis (AWS JSON 1.1, over HTTP/2 as the SDK sends it) and
// Lambda (REST-JSON). Each call goes to another node. Prints `ok: ...` per
// check; exits 1 with `FAILED: ...` on the first that fails.
//
// Usage: node smoke.mjs ENDPOINTS CA KEY SECRET
//   ENDPOINTS  comma-separated https://host:port of the nodes
//   CA         the CA bundle the nodes' certificates chain to
//   KEY/SECRET an access key allowed everything
//
// Run by cluster-tests/tests/aws_js.rs; the packages are pinned in
// package.json and package-lock.json (`npm ci --prefix cluster-tests/js`).

import { createHash } from "node:crypto";
import { readFileSync } from "node:fs";
import https from "node:https";
import { deflateRawSync } from "node:zlib";

import {
  CreateStreamCommand,
  DeleteStreamCommand,
  DescribeStreamSummaryCommand,
  GetRecordsCommand,
  GetShardIteratorCommand,
  KinesisClient,
  ListShardsCommand,
  PutRecordCommand,
  PutRecordsCommand,
  ResourceNotFoundException as KinesisResourceNotFound,
  waitUntilStreamExists,
} from "@aws-sdk/client-kinesis";
import {
  CreateFunctionCommand,
  DeleteFunctionCommand,
  InvokeCommand,
  LambdaClient,
  ResourceNotFoundException as LambdaResourceNotFound,
  waitUntilFunctionActiveV2,
} from "@aws-sdk/client-lambda";
import {
  CreateTopicCommand,
  DeleteTopicCommand,
  GetTopicAttributesCommand,
  NotFoundException,
  PublishCommand,
  SNSClient,
  SubscribeCommand,
} from "@aws-sdk/client-sns";
import {
  CreateQueueCommand,
  DeleteMessageCommand,
  DeleteQueueCommand,
  GetQueueAttributesCommand,
  GetQueueUrlCommand,
  QueueDoesNotExist,
  ReceiveMessageCommand,
  SendMessageCommand,
  SQSClient,
} from "@aws-sdk/client-sqs";
import { GetCallerIdentityCommand, STSClient } from "@aws-sdk/client-sts";

const [endpointList, caFile, key, secret] = process.argv.slice(2);
if (!secret) {
  console.error("usage: node smoke.mjs ENDPOINTS CA KEY SECRET");
  process.exit(2);
}
const endpoints = endpointList.split(",");
const ca = readFileSync(caFile);
const ACCOUNT = "000000000000";

// The nodes' certificates chain to the test's own CA, handed to the SDK's
// request handlers (as boto3 takes `verify=CA`): the HTTP/1.1 handler of
// SQS, SNS, STS and Lambda through its https agent, and the HTTP/2 handler
// Kinesis uses by default through its connect options.
const common = {
  region: "us-east-1",
  credentials: { accessKeyId: key, secretAccessKey: secret },
  maxAttempts: 8,
};
const http1 = () => ({ requestHandler: { httpsAgent: new https.Agent({ ca, keepAlive: true }) } });
const http2 = () => ({
  requestHandler: { nodeHttp2ConnectOptions: { ca }, disableConcurrentStreams: true },
});
const perNode = (Client, handler) =>
  endpoints.map((endpoint) => new Client({ ...common, endpoint, ...handler() }));

const sqs = perNode(SQSClient, http1);
const sns = perNode(SNSClient, http1);
const sts = perNode(STSClient, http1);
const lambda = perNode(LambdaClient, http1);
const kinesis = perNode(KinesisClient, http2);
const at = (clients, i) => clients[i % clients.length];

function check(what, ok, detail) {
  if (!ok) {
    const text = detail === undefined ? "" : ` ${typeof detail === "string" ? detail : JSON.stringify(detail, replacer)}`;
    console.error(`FAILED: ${what}${text}`);
    process.exit(1);
  }
  console.log(`ok: ${what}`);
}

// JSON.stringify for what the SDK answers: bytes as arrays, dates as ISO.
function replacer(_key, value) {
  if (value instanceof Uint8Array) return Array.from(value);
  if (value?.type === "Buffer" && Array.isArray(value.data)) return value.data;
  return value;
}

// The error `call` rejects with, or undefined.
async function errorOf(call) {
  try {
    await call();
  } catch (e) {
    return e;
  }
  return undefined;
}

function describeError(e) {
  if (e === undefined) return "no error was raised";
  return `${e.name}: ${e.message} (HTTP ${e.$metadata?.httpStatusCode}, ${e.constructor?.name})`;
}

const sameBytes = (a, b) => a instanceof Uint8Array && Buffer.compare(Buffer.from(a), Buffer.from(b)) === 0;

// Each step names itself, so an exception the SDK raises is reported as the
// check that failed.
async function step(what, body) {
  try {
    return await body();
  } catch (e) {
    console.error(`FAILED: ${what}: ${describeError(e)}`);
    if (e?.stack) console.error(e.stack);
    process.exit(1);
  }
}

// A zip of `files` (name to text), deflated, as the zip tools write one: a
// Lambda deployment package built here, without a dependency.
const CRC_TABLE = Array.from({ length: 256 }, (_, n) => {
  let c = n;
  for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
  return c >>> 0;
});
function crc32(bytes) {
  let c = 0xffffffff;
  for (const b of bytes) c = CRC_TABLE[(c ^ b) & 0xff] ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}
function zip(files) {
  const locals = [];
  const centrals = [];
  let offset = 0;
  // 1980-01-01 00:00, the earliest time a zip entry can carry.
  const time = 0;
  const date = (0 << 9) | (1 << 5) | 1;
  for (const [name, text] of Object.entries(files)) {
    const nameBytes = Buffer.from(name, "utf8");
    const data = Buffer.from(text, "utf8");
    const packed = deflateRawSync(data);
    const crc = crc32(data);
    // The fields from "version needed" to the name's length, which the
    // local header and the central directory entry both carry.
    const entry = (buf, at) => {
      buf.writeUInt16LE(20, at); // version needed: 2.0 (deflate)
      buf.writeUInt16LE(0x0800, at + 2); // names are UTF-8
      buf.writeUInt16LE(8, at + 4); // deflate
      buf.writeUInt16LE(time, at + 6);
      buf.writeUInt16LE(date, at + 8);
      buf.writeUInt32LE(crc, at + 10);
      buf.writeUInt32LE(packed.length, at + 14);
      buf.writeUInt32LE(data.length, at + 18);
      buf.writeUInt16LE(nameBytes.length, at + 22);
    };
    const local = Buffer.alloc(30);
    local.writeUInt32LE(0x04034b50, 0);
    entry(local, 4);
    local.writeUInt16LE(0, 28);
    const central = Buffer.alloc(46);
    central.writeUInt32LE(0x02014b50, 0);
    central.writeUInt16LE((3 << 8) | 20, 4); // made by: Unix, 2.0
    entry(central, 6);
    central.writeUInt32LE((0o100644 << 16) >>> 0, 38); // a regular file, rw-r--r--
    central.writeUInt32LE(offset, 42);
    locals.push(local, nameBytes, packed);
    centrals.push(central, nameBytes);
    offset += local.length + nameBytes.length + packed.length;
  }
  const directory = Buffer.concat(centrals);
  const end = Buffer.alloc(22);
  end.writeUInt32LE(0x06054b50, 0);
  end.writeUInt16LE(Object.keys(files).length, 8);
  end.writeUInt16LE(Object.keys(files).length, 10);
  end.writeUInt32LE(directory.length, 12);
  end.writeUInt32LE(offset, 16);
  return Buffer.concat([...locals, directory, end]);
}

// Receives from `url` until a message arrives (up to `rounds` long polls).
async function receiveOne(client, url, rounds = 3) {
  for (let i = 0; i < rounds; i++) {
    const r = await client.send(
      new ReceiveMessageCommand({
        QueueUrl: url,
        MaxNumberOfMessages: 10,
        WaitTimeSeconds: 5,
        MessageAttributeNames: ["All"],
        MessageSystemAttributeNames: ["All"],
      }),
    );
    if (r.Messages?.length) return r.Messages;
  }
  return [];
}

// SQS, over AWS JSON 1.0.
const queueUrl = await step("SQS CreateQueue", async () => {
  const r = await at(sqs, 0).send(new CreateQueueCommand({ QueueName: "js-smoke" }));
  check("SQS CreateQueue", r.QueueUrl?.endsWith(`/${ACCOUNT}/js-smoke`), r);
  return r.QueueUrl;
});
await step("SQS SendMessage", async () => {
  const body = "hello from the JavaScript SDK";
  // The SDK checks the MD5 digests of the body and attributes itself.
  const r = await at(sqs, 1).send(
    new SendMessageCommand({
      QueueUrl: queueUrl,
      MessageBody: body,
      MessageAttributes: {
        color: { DataType: "String", StringValue: "blue" },
        raw: { DataType: "Binary", BinaryValue: Uint8Array.from([0, 255, 7]) },
      },
    }),
  );
  check(
    "SQS SendMessage with message attributes",
    r.MessageId && r.MD5OfMessageBody === createHash("md5").update(body).digest("hex") && r.MD5OfMessageAttributes,
    r,
  );
});
const received = await step("SQS ReceiveMessage", async () => {
  const messages = await receiveOne(at(sqs, 2), queueUrl);
  const m = messages[0];
  check(
    "SQS ReceiveMessage: the body, both attributes, system attributes",
    messages.length === 1 &&
      m.Body === "hello from the JavaScript SDK" &&
      m.MessageAttributes?.color?.StringValue === "blue" &&
      m.MessageAttributes?.color?.DataType === "String" &&
      sameBytes(m.MessageAttributes?.raw?.BinaryValue, [0, 255, 7]) &&
      m.Attributes?.ApproximateReceiveCount === "1",
    messages,
  );
  return m;
});
await step("SQS DeleteMessage", async () => {
  await at(sqs, 0).send(new DeleteMessageCommand({ QueueUrl: queueUrl, ReceiptHandle: received.ReceiptHandle }));
  const r = await at(sqs, 1).send(
    new GetQueueAttributesCommand({
      QueueUrl: queueUrl,
      AttributeNames: ["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    }),
  );
  check(
    "SQS DeleteMessage leaves the queue empty",
    r.Attributes?.ApproximateNumberOfMessages === "0" && r.Attributes?.ApproximateNumberOfMessagesNotVisible === "0",
    r,
  );
});
await step("SQS typed error", async () => {
  const e = await errorOf(() => at(sqs, 2).send(new GetQueueUrlCommand({ QueueName: "js-no-such-queue" })));
  check(
    "SQS QueueDoesNotExist is raised typed, with the query protocol's code",
    e instanceof QueueDoesNotExist &&
      e.name === "QueueDoesNotExist" &&
      e.$metadata?.httpStatusCode === 400 &&
      e.Code === "AWS.SimpleQueueService.NonExistentQueue",
    describeError(e) + ` Code=${e?.Code}`,
  );
});

// SNS, over the query protocol, delivering to an SQS queue.
const topicArn = await step("SNS CreateTopic", async () => {
  const r = await at(sns, 0).send(new CreateTopicCommand({ Name: "js-smoke-topic" }));
  check("SNS CreateTopic", r.TopicArn === `arn:aws:sns:us-east-1:${ACCOUNT}:js-smoke-topic`, r);
  return r.TopicArn;
});
const subscriber = await step("SNS subscriber queue", async () => {
  const url = (await at(sqs, 1).send(new CreateQueueCommand({ QueueName: "js-smoke-subscriber" }))).QueueUrl;
  const r = await at(sqs, 2).send(new GetQueueAttributesCommand({ QueueUrl: url, AttributeNames: ["QueueArn"] }));
  const arn = r.Attributes?.QueueArn;
  check("SQS GetQueueAttributes QueueArn", arn === `arn:aws:sqs:us-east-1:${ACCOUNT}:js-smoke-subscriber`, r);
  return { url, arn };
});
await step("SNS Subscribe", async () => {
  const r = await at(sns, 1).send(
    new SubscribeCommand({
      TopicArn: topicArn,
      Protocol: "sqs",
      Endpoint: subscriber.arn,
      Attributes: { RawMessageDelivery: "true" },
      ReturnSubscriptionArn: true,
    }),
  );
  check("SNS Subscribe an SQS queue with RawMessageDelivery", r.SubscriptionArn?.startsWith(`${topicArn}:`), r);
});
await step("SNS Publish", async () => {
  const r = await at(sns, 2).send(
    new PublishCommand({
      TopicArn: topicArn,
      Message: "published from the JavaScript SDK",
      MessageAttributes: { color: { DataType: "String", StringValue: "green" } },
    }),
  );
  check("SNS Publish", typeof r.MessageId === "string" && r.MessageId.length > 0, r);
});
await step("SNS delivery", async () => {
  const messages = await receiveOne(at(sqs, 0), subscriber.url);
  check(
    "the published message arrives raw in the subscribed queue, with its attribute",
    messages.length === 1 &&
      messages[0].Body === "published from the JavaScript SDK" &&
      messages[0].MessageAttributes?.color?.StringValue === "green",
    messages,
  );
});
await step("SNS typed error", async () => {
  const e = await errorOf(() =>
    at(sns, 1).send(new GetTopicAttributesCommand({ TopicArn: `arn:aws:sns:us-east-1:${ACCOUNT}:js-no-such-topic` })),
  );
  check(
    "SNS NotFoundException is raised typed",
    e instanceof NotFoundException && e.$metadata?.httpStatusCode === 404,
    describeError(e),
  );
});

// Kinesis, over AWS JSON 1.1.
const stream = "js-smoke-stream";
const kinesisTypes = [];
at(kinesis, 0).middlewareStack.add(
  (next) => async (args) => {
    kinesisTypes.push(args.request.headers["content-type"]);
    return next(args);
  },
  { step: "finalizeRequest", name: "recordContentType" },
);
await step("Kinesis CreateStream", async () => {
  await at(kinesis, 0).send(new CreateStreamCommand({ StreamName: stream, ShardCount: 1 }));
  // The SDK for JavaScript speaks AWS JSON 1.1 to Kinesis, never CBOR.
  check("Kinesis CreateStream, sent as application/x-amz-json-1.1", kinesisTypes[0] === "application/x-amz-json-1.1", kinesisTypes);
  const w = await waitUntilStreamExists({ client: at(kinesis, 1), maxWaitTime: 60, minDelay: 1, maxDelay: 2 }, { StreamName: stream });
  check("the stream-exists waiter", w.state === "SUCCESS", w.state);
  const s = await at(kinesis, 2).send(new DescribeStreamSummaryCommand({ StreamName: stream }));
  const d = s.StreamDescriptionSummary;
  check(
    "Kinesis DescribeStreamSummary: ACTIVE, one shard",
    d?.StreamStatus === "ACTIVE" &&
      d.OpenShardCount === 1 &&
      d.StreamARN === `arn:aws:kinesis:us-east-1:${ACCOUNT}:stream/${stream}` &&
      d.StreamCreationTimestamp instanceof Date,
    s,
  );
});
// Bytes that are not UTF-8, and text that is.
const sent = [Uint8Array.from([0, 1, 2, 255, 254]), Buffer.from("héllo, kinesis")].concat(
  Array.from({ length: 4 }, (_, i) => Buffer.from(`batch ${i}`)),
);
await step("Kinesis PutRecord, PutRecords", async () => {
  const one = await at(kinesis, 0).send(new PutRecordCommand({ StreamName: stream, Data: sent[0], PartitionKey: "first" }));
  check("Kinesis PutRecord", one.ShardId === "shardId-000000000000" && /^\d+$/.test(one.SequenceNumber ?? ""), one);
  const many = await at(kinesis, 1).send(
    new PutRecordsCommand({
      StreamName: stream,
      Records: sent.slice(1).map((Data, i) => ({ Data, PartitionKey: `k${i}` })),
    }),
  );
  check(
    "Kinesis PutRecords",
    many.FailedRecordCount === 0 && many.Records?.length === sent.length - 1 && many.Records.every((r) => r.SequenceNumber),
    many,
  );
});
await step("Kinesis GetShardIterator, GetRecords", async () => {
  const shards = (await at(kinesis, 2).send(new ListShardsCommand({ StreamName: stream }))).Shards ?? [];
  check("Kinesis ListShards", shards.length === 1 && shards[0].ShardId === "shardId-000000000000", shards);
  const it = await at(kinesis, 0).send(
    new GetShardIteratorCommand({ StreamName: stream, ShardId: shards[0].ShardId, ShardIteratorType: "TRIM_HORIZON" }),
  );
  check("Kinesis GetShardIterator TRIM_HORIZON", typeof it.ShardIterator === "string" && it.ShardIterator.length > 0, it);
  const got = [];
  let iterator = it.ShardIterator;
  let last;
  // Each read goes to another node; one that has not yet applied the puts
  // answers fewer records, and the next read goes on from there until all
  // have come (30 s at most).
  const deadline = Date.now() + 30_000;
  for (let round = 0; iterator && got.length < sent.length && Date.now() < deadline; round++) {
    last = await at(kinesis, 1 + round).send(new GetRecordsCommand({ ShardIterator: iterator, Limit: 100 }));
    got.push(...(last.Records ?? []));
    iterator = last.NextShardIterator;
  }
  check(
    "Kinesis GetRecords: every record's bytes as sent, in order",
    got.length === sent.length && got.every((r, i) => sameBytes(r.Data, sent[i])),
    { got: got.map((r) => r.Data), sent },
  );
  check(
    "Kinesis records carry partition keys and arrival times",
    got[0].PartitionKey === "first" && got[1].PartitionKey === "k0" && got.every((r) => r.ApproximateArrivalTimestamp instanceof Date),
    got,
  );
  check("Kinesis GetRecords MillisBehindLatest", typeof last?.MillisBehindLatest === "number", last);
});
await step("Kinesis typed error", async () => {
  const e = await errorOf(() => at(kinesis, 2).send(new DescribeStreamSummaryCommand({ StreamName: "js-no-such-stream" })));
  check(
    "Kinesis ResourceNotFoundException is raised typed",
    e instanceof KinesisResourceNotFound && e.name === "ResourceNotFoundException" && e.$metadata?.httpStatusCode === 400,
    describeError(e),
  );
});
// Kinesis over CBOR (application/x-amz-cbor-1.1, the Java SDK's default) is
// not checked here: the SDK for JavaScript has no CBOR protocol for Kinesis
// (its client is generated with AwsJson1_1Protocol from Kinesis's model,
// which declares awsJson1_1 only).

// Lambda, over REST-JSON: a package of only index.mjs runs on the nodes'
// managed nodejs20.x runtime.
const fn = "js-smoke-fn";
await step("Lambda CreateFunction", async () => {
  const code = zip({
    "index.mjs":
      "export const handler = async (event, context) => {\n" +
      "  console.log('js smoke got', event.n);\n" +
      "  return { doubled: event.n * 2, name: context.functionName };\n" +
      "};\n",
  });
  const r = await at(lambda, 0).send(
    new CreateFunctionCommand({
      FunctionName: fn,
      Runtime: "nodejs20.x",
      Role: `arn:aws:iam::${ACCOUNT}:role/js-smoke`,
      Handler: "index.handler",
      Code: { ZipFile: code },
    }),
  );
  check(
    "Lambda CreateFunction nodejs20.x from a zip of index.mjs",
    r.FunctionArn === `arn:aws:lambda:us-east-1:${ACCOUNT}:function:${fn}` && r.Runtime === "nodejs20.x" && r.Handler === "index.handler",
    r,
  );
  const w = await waitUntilFunctionActiveV2({ client: at(lambda, 1), maxWaitTime: 60, minDelay: 1, maxDelay: 2 }, { FunctionName: fn });
  check("the function-active waiter", w.state === "SUCCESS", w.state);
});
await step("Lambda Invoke", async () => {
  const r = await at(lambda, 2).send(
    new InvokeCommand({
      FunctionName: fn,
      InvocationType: "RequestResponse",
      LogType: "Tail",
      Payload: Buffer.from(JSON.stringify({ n: 21 })),
    }),
  );
  const text = r.Payload ? Buffer.from(r.Payload).toString("utf8") : "";
  let payload;
  try {
    payload = JSON.parse(text);
  } catch {
    payload = undefined;
  }
  check(
    "Lambda Invoke RequestResponse: the handler's answer",
    r.StatusCode === 200 && r.FunctionError === undefined && payload?.doubled === 42 && payload?.name === fn,
    { StatusCode: r.StatusCode, FunctionError: r.FunctionError, payload: text },
  );
  const log = r.LogResult ? Buffer.from(r.LogResult, "base64").toString("utf8") : "";
  check("Lambda Invoke with LogType Tail: the function's log", log.includes("js smoke got 21"), log);
});
await step("Lambda typed error", async () => {
  const e = await errorOf(() =>
    at(lambda, 0).send(new InvokeCommand({ FunctionName: "js-no-such-function", Payload: Buffer.from("{}") })),
  );
  check(
    "Lambda ResourceNotFoundException is raised typed",
    e instanceof LambdaResourceNotFound && e.name === "ResourceNotFoundException" && e.$metadata?.httpStatusCode === 404,
    describeError(e),
  );
});

// STS, over the query protocol.
await step("STS GetCallerIdentity", async () => {
  for (let i = 0; i < endpoints.length; i++) {
    const r = await at(sts, i).send(new GetCallerIdentityCommand({}));
    check(
      `STS GetCallerIdentity on node ${i + 1}`,
      r.Account === ACCOUNT && r.UserId === key && /^arn:aws:iam::000000000000:user\/.+/.test(r.Arn ?? ""),
      r,
    );
  }
});

// Clean up, each through another node.
await step("clean up", async () => {
  await at(lambda, 1).send(new DeleteFunctionCommand({ FunctionName: fn }));
  await at(kinesis, 2).send(new DeleteStreamCommand({ StreamName: stream }));
  await at(sns, 0).send(new DeleteTopicCommand({ TopicArn: topicArn }));
  await at(sqs, 1).send(new DeleteQueueCommand({ QueueUrl: queueUrl }));
  await at(sqs, 2).send(new DeleteQueueCommand({ QueueUrl: subscriber.url }));
  const e = await errorOf(() => at(lambda, 2).send(new DeleteFunctionCommand({ FunctionName: fn })));
  check("DeleteFunction, DeleteStream, DeleteTopic, DeleteQueue", e instanceof LambdaResourceNotFound, describeError(e));
});

for (const clients of [sqs, sns, sts, lambda, kinesis]) for (const c of clients) c.destroy();
console.log("all JS checks passed");
