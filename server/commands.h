/* Subcommands of the altmoe binary. Each takes the arguments after its own name (argv[0] is the
 * subcommand name) and returns the process exit status: 0 on success, 1 on a runtime failure,
 * 2 on a usage error. */
#ifndef ALTMOE_SERVER_COMMANDS_H
#define ALTMOE_SERVER_COMMANDS_H

int ams_cmd_init(int argc, char **argv);
int ams_cmd_model(int argc, char **argv);
int ams_cmd_project(int argc, char **argv);
int ams_cmd_train(int argc, char **argv);
int ams_cmd_eval(int argc, char **argv);
int ams_cmd_serve(int argc, char **argv);

#endif
