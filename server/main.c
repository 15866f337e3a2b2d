/* The altmoe binary: dispatches to one subcommand per verb. */
#include <stdio.h>
#include <string.h>

#include "server/commands.h"

typedef struct ams_command {
    const char *name;
    int (*run)(int argc, char **argv);
    const char *help;
} ams_command;

static const ams_command commands[] = {
    {"init", ams_cmd_init, "create a randomly initialised connector model file"},
    {"model", ams_cmd_model, "inspect a model file (model info FILE)"},
    {"project", ams_cmd_project, "project embeddings from a .npy file through a connector"},
    {"train", ams_cmd_train, "train a connector on aligned .npy embeddings"},
    {"eval", ams_cmd_eval, "print a model's retrieval recall on aligned .npy embeddings"},
    {"serve", ams_cmd_serve, "run the REST/JSON retrieval server (serve --help for options)"},
};

static void print_usage(FILE *out)
{
    fprintf(out, "usage: altmoe COMMAND [OPTIONS]\n\ncommands:\n");
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        fprintf(out, "  %-10s %s\n", commands[i].name, commands[i].help);
    fprintf(out, "\nRun 'altmoe COMMAND --help' for the options of one command.\n");
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        print_usage(stderr);
        return 2;
    }
    if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0 ||
        strcmp(argv[1], "help") == 0) {
        print_usage(stdout);
        return 0;
    }
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++) {
        if (strcmp(argv[1], commands[i].name) == 0)
            return commands[i].run(argc - 1, argv + 1);
    }
    fprintf(stderr, "altmoe: unknown command '%s'\n\n", argv[1]);
    print_usage(stderr);
    return 2;
}
