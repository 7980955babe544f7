// Configuration of Auth0's browser sample (app.js), the only file to edit.
//
// Every line below is a configuration value. With Auth0 they named the tenant and its
// applications; with rolegate they name rolegate's address, the id_token's client, the
// SAMLApp, the role pair a RoleMapping grants, and the bucket.

// Where auth0.js sends getDelegationToken: https://<AUTH0_DOMAIN>/delegation. rolegate's
// address, served over https (auth0.js always uses https).
var AUTH0_DOMAIN = 'rolegate.example.com';
// The client the person's id_token was issued to (the Connection's clientId; the token's aud).
var AUTH0_CLIENT_ID = 'web';
// Auth0's target client: rolegate's SAMLApp name.
var TARGET_CLIENT_ID = 'aws';
// The role pair, as the RoleMapping grants it (roleArn, and the IAMProvider's ARN).
var AWS_ROLE_ARN = 'arn:aws:iam::123456789012:role/auth0-uploader';
var AWS_PRINCIPAL_ARN = 'arn:aws:iam::123456789012:saml-provider/auth0-migrated';
// The bucket the sample uploads to.
var BUCKET = 'your-bucket';

// What the sample's login step (Auth0 Lock) left behind: the person's id_token and profile.
var id_token = '';
var user = {id: ''};

// Where the AWS SDK sends S3 calls; leave empty for AWS itself.
var AWS_S3_ENDPOINT = '';
AWS.config.update(AWS_S3_ENDPOINT
  ? {region: 'us-east-1', endpoint: AWS_S3_ENDPOINT, s3ForcePathStyle: true}
  : {region: 'us-east-1'});
