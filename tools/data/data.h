/* The training-data builder (tools/data/README.md): code LM documents, agent transcripts, FIM. */
#ifndef DATA_DATA_H
#define DATA_DATA_H

int data_cmd_build(int argc, char **argv);

#endif
