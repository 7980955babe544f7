// An unmodified AWS SDK for JavaScript v3 client, as a pod would run it: the default credential
// chain (which reads AWS_CONTAINER_CREDENTIALS_FULL_URI and AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE)
// and sts get-caller-identity. Prints the caller ARN.
const { STSClient, GetCallerIdentityCommand } = require("@aws-sdk/client-sts");

new STSClient({})
  .send(new GetCallerIdentityCommand({}))
  .then((identity) => console.log(identity.Arn))
  .catch((error) => {
    console.error(`whoami: ${error.name}: ${error.message}`);
    process.exit(1);
  });
