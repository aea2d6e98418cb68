//! `sluice.v1.Queues`.

use std::collections::BTreeMap;

use sluice_proto::v1 as pb;
use tonic::{Request, Response, Status};

use super::{consistency, observe, Consistency, Context};
use crate::command::{Command, CommandOutput, Query, QueryOutput, QueryResponse};
use crate::queues::{self, CreateQueue, ListQueues};
use crate::router::RouteError;

/// Serves the queue API.
pub struct QueuesApi {
    ctx: Context,
}

impl QueuesApi {
    /// The service over a node's context.
    pub fn new(ctx: Context) -> Self {
        QueuesApi { ctx }
    }

    fn url(&self, name: &str) -> String {
        self.ctx.identity.queue_url(&self.ctx.advertise, name)
    }

    fn arn(&self, name: &str) -> String {
        self.ctx.identity.queue_arn(name)
    }

    async fn query(&self, how: Consistency, query: Query) -> Result<QueryOutput, Status> {
        let reply: Result<QueryResponse, RouteError> = match how {
            Consistency::Linearizable => self.ctx.router.read(query).await,
            Consistency::Local => self.ctx.router.read_local(&query),
        };
        Ok(reply??)
    }

    async fn command(&self, command: Command) -> Result<CommandOutput, Status> {
        Ok(self.ctx.router.write(command).await??)
    }
}

fn unexpected(what: &str) -> Status {
    super::status::internal(format!("unexpected reply to {what}"))
}

#[tonic::async_trait]
impl pb::queues_server::Queues for QueuesApi {
    async fn create_queue(
        &self,
        request: Request<pb::CreateQueueRequest>,
    ) -> Result<Response<pb::CreateQueueResponse>, Status> {
        observe("CreateQueue", async {
            let req = request.into_inner();
            let attributes: BTreeMap<String, String> = req.attributes.into_iter().collect();
            let tags: BTreeMap<String, String> = req.tags.into_iter().collect();
            let cmd = CreateQueue::new(&req.queue_name, &attributes, tags)?;
            match self.command(Command::CreateQueue(cmd)).await? {
                CommandOutput::QueueCreated { created } => {
                    Ok(Response::new(pb::CreateQueueResponse {
                        queue_url: self.url(&req.queue_name),
                        queue_arn: self.arn(&req.queue_name),
                        created,
                    }))
                }
                _ => Err(unexpected("CreateQueue")),
            }
        })
        .await
    }

    async fn get_queue_url(
        &self,
        request: Request<pb::GetQueueUrlRequest>,
    ) -> Result<Response<pb::GetQueueUrlResponse>, Status> {
        observe("GetQueueUrl", async {
            let how = consistency(&request)?;
            let req = request.into_inner();
            queues::validate_name("queue_name", &req.queue_name)?;
            if !req.queue_owner_aws_account_id.is_empty()
                && req.queue_owner_aws_account_id != self.ctx.identity.account_id
            {
                return Err(super::status::invalid(
                    "queue_owner_aws_account_id",
                    format!(
                        "must be empty or this cluster's account id {}",
                        self.ctx.identity.account_id
                    ),
                ));
            }
            match self
                .query(
                    how,
                    Query::GetQueue {
                        name: req.queue_name.clone(),
                    },
                )
                .await?
            {
                QueryOutput::Queue(q) => Ok(Response::new(pb::GetQueueUrlResponse {
                    queue_url: self.url(&q.name),
                    queue_arn: self.arn(&q.name),
                })),
                _ => Err(unexpected("GetQueueUrl")),
            }
        })
        .await
    }

    async fn list_queues(
        &self,
        request: Request<pb::ListQueuesRequest>,
    ) -> Result<Response<pb::ListQueuesResponse>, Status> {
        observe("ListQueues", async {
            let how = consistency(&request)?;
            let req = request.into_inner();
            let list = ListQueues::new(&req.queue_name_prefix, req.max_results, &req.next_token)?;
            match self.query(how, Query::ListQueues(list)).await? {
                QueryOutput::Queues(page) => Ok(Response::new(pb::ListQueuesResponse {
                    queue_urls: page.names.iter().map(|n| self.url(n)).collect(),
                    queue_names: page.names,
                    next_token: page.next_token.unwrap_or_default(),
                })),
                _ => Err(unexpected("ListQueues")),
            }
        })
        .await
    }

    async fn delete_queue(
        &self,
        request: Request<pb::DeleteQueueRequest>,
    ) -> Result<Response<pb::DeleteQueueResponse>, Status> {
        observe("DeleteQueue", async {
            let req = request.into_inner();
            queues::validate_name("queue_name", &req.queue_name)?;
            match self
                .command(Command::DeleteQueue {
                    name: req.queue_name,
                })
                .await?
            {
                CommandOutput::QueueDeleted => Ok(Response::new(pb::DeleteQueueResponse {})),
                _ => Err(unexpected("DeleteQueue")),
            }
        })
        .await
    }
}
