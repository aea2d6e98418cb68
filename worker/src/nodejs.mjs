// The runtime loop of Sluice's managed `nodejs*` runtimes: loads the
// handler module from LAMBDA_TASK_ROOT and serves invocations through the
// Lambda Runtime API (next, then response or error), as Lambda's Node.js
// runtime does. Handlers may be async, return a promise, or take a
// callback.
import { existsSync } from "node:fs";
import { join } from "node:path";
import { pathToFileURL } from "node:url";

const api = `http://${process.env.AWS_LAMBDA_RUNTIME_API}/2018-06-01/runtime`;
const handlerName = process.env._HANDLER || "";

function errorDocument(e) {
  const error = e instanceof Error ? e : new Error(String(e));
  return {
    errorType: error.name || "Error",
    errorMessage: error.message,
    trace: String(error.stack || "").split("\n"),
  };
}

async function post(path, body, errorType) {
  const headers = { "content-type": "application/json" };
  if (errorType) headers["lambda-runtime-function-error-type"] = errorType;
  await fetch(`${api}${path}`, { method: "POST", headers, body: JSON.stringify(body) });
}

async function loadHandler() {
  const dot = handlerName.lastIndexOf(".");
  if (dot <= 0) {
    throw Object.assign(new Error(`bad handler ${JSON.stringify(handlerName)}: want FILE.EXPORT`), {
      name: "Runtime.MalformedHandlerName",
    });
  }
  const file = handlerName.slice(0, dot);
  const name = handlerName.slice(dot + 1);
  const base = join(process.env.LAMBDA_TASK_ROOT, file);
  const path = [".mjs", ".js", ".cjs"].map((ext) => base + ext).find((p) => existsSync(p));
  if (!path) {
    throw Object.assign(new Error(`Cannot find module '${file}'`), { name: "Runtime.ImportModuleError" });
  }
  const module = await import(pathToFileURL(path).href);
  const fn = module[name] ?? module.default?.[name];
  if (typeof fn !== "function") {
    throw Object.assign(new Error(`${handlerName} is undefined or not exported`), {
      name: "Runtime.HandlerNotFound",
    });
  }
  return fn;
}

let handler;
try {
  handler = await loadHandler();
} catch (e) {
  const doc = errorDocument(e);
  console.error(JSON.stringify(doc));
  await post("/init/error", doc, doc.errorType);
  process.exit(1);
}

for (;;) {
  const next = await fetch(`${api}/invocation/next`);
  const id = next.headers.get("lambda-runtime-aws-request-id");
  const deadline = Number(next.headers.get("lambda-runtime-deadline-ms") || 0);
  const event = await next.json();
  const context = {
    awsRequestId: id,
    invokedFunctionArn: next.headers.get("lambda-runtime-invoked-function-arn"),
    functionName: process.env.AWS_LAMBDA_FUNCTION_NAME,
    functionVersion: process.env.AWS_LAMBDA_FUNCTION_VERSION,
    memoryLimitInMB: process.env.AWS_LAMBDA_FUNCTION_MEMORY_SIZE,
    logGroupName: process.env.AWS_LAMBDA_LOG_GROUP_NAME,
    logStreamName: process.env.AWS_LAMBDA_LOG_STREAM_NAME,
    callbackWaitsForEmptyEventLoop: true,
    getRemainingTimeInMillis: () => Math.max(0, deadline - Date.now()),
  };
  try {
    const result =
      handler.length >= 3
        ? await new Promise((resolve, reject) =>
            handler(event, context, (error, value) => (error ? reject(error) : resolve(value))))
        : await handler(event, context);
    await post(`/invocation/${id}/response`, result ?? null);
  } catch (e) {
    const doc = errorDocument(e);
    console.error(JSON.stringify(doc));
    await post(`/invocation/${id}/error`, doc, doc.errorType);
  }
}
