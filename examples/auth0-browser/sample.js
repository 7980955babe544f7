  var targetClientId = "{TARGET_CLIENT_ID}";
  
  var options = {
    "id_token":  "USER_ID_TOKEN",        // MANDATORY!
    "client_id": "THE_CLIENT_ID_OF_CALLER",
    "role":      "arn:aws:iam::010616021751:role/foo",
    "principal": "arn:aws:iam::010616021751:saml-provider/idpname"         
  };

  options.targetClientId = targetClientId;
  auth0.getDelegationToken(options, function (err, delegationResult) {
    uploadFileToS3(delegationResult.Credentials, done);
  });

  function uploadFileToS3 (awsToken, callback) {
    $('#upload').on('click', function() {
      var params = {
          Key: user.id + '/' + file.name, 
          ContentType: fileChooser.files[0].type, 
          Body: fileChooser.files[0]}; 
      
      var bucket = new AWS.S3({params: {Bucket: 'THE_BUCKET'}});
      bucket.config.credentials = 
        new AWS.Credentials(awsToken.AccessKeyId,
                            awsToken.SecretAccessKey,
                            awsToken.SessionToken);
      bucket.putObject(params, callback); 
    });
  }
