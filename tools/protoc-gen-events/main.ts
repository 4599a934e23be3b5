/**
 * Entry point of protoc-gen-events for `buf generate` (see buf.gen.yaml):
 * reads a CodeGeneratorRequest on stdin and writes the response to stdout.
 */
import { runNodeJs } from "@bufbuild/protoplugin";
import { protocGenEvents } from "./plugin.js";

runNodeJs(protocGenEvents);
