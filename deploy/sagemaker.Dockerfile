# The SageMaker Triton image with the Python-backend models' packages, pushed to your ECR and named by
# `tritonrepo package sagemaker --image`. The base is AWS's sagemaker-tritonserver image of the region
# (tritonrepo.deploy.sagemaker_image; 24.09 is the release closest to the local 24.10 that AWS lists).
#   docker build -f deploy/sagemaker.Dockerfile --build-arg BASE=763104351884.dkr.ecr.us-east-1.amazonaws.com/sagemaker-tritonserver:24.09-py3 -t tritonrepo-sagemaker-triton:24.09 .
ARG BASE
FROM ${BASE}
COPY deploy/requirements-triton.txt /tmp/requirements-triton.txt
RUN pip install --no-cache-dir -r /tmp/requirements-triton.txt && rm /tmp/requirements-triton.txt
