
local-1)
outbound127.0.0.1:15001 *outbound°
outbound£
reviewsreviewsreviews:90807
jason-to-v2
end-user
jason

reviewsv2dH
canary>

reviewsv1P

reviewsv2Ð5xx,connect-failure"{
reviews0:
v1
versionv1:
v2
versionv2B 
127.0.0.1:19081
versionv1B 
127.0.0.1:19082
versionv2