// `l2l grow`: deepen a trained GPT-2 checkpoint without changing its outputs; the result resumes training.
using System.CommandLine;
using L2L.Model;
using L2L.Training;

namespace L2L.Cli.Commands;

internal static class GrowCommand
{
    public static Command Create()
    {
        var checkpoint = new Option<string>("--checkpoint") { Description = "Checkpoint directory to grow (left unchanged).", Required = true };
        var layers = new Option<int>("--layers") { Description = "Blocks of the grown model (more than the checkpoint's).", Required = true };
        var output = new Option<string>("--out") { Description = "Directory for the grown checkpoint.", Required = true };
        var at = new Option<string>("--at") { Description = "top (new blocks after the old ones) or interleave (spread between them).", DefaultValueFactory = _ => "top" };
        var seed = new Option<int>("--seed") { Description = "Seed for the new blocks' initialisation.", DefaultValueFactory = _ => 1337 };
        var command = new Command("grow", "Deepen a GPT-2 checkpoint function-preservingly: new blocks with zero output projections; old layers keep their optimizer state.");
        foreach (var o in new Option[] { checkpoint, layers, output, at, seed })
            command.Options.Add(o);
        command.SetAction(parse =>
        {
            var placement = Enums.Parse<GrowthPlacement>(parse.GetValue(at)!, "--at");
            var grown = CheckpointGrowth.Grow(parse.GetValue(checkpoint)!, parse.GetValue(layers), parse.GetValue(output)!, placement, parse.GetValue(seed));
            Console.WriteLine($"grew to {grown.Layers} blocks ({grown.ParameterCount:N0} parameters), new blocks placed: {placement.ToString().ToLowerInvariant()}; wrote {parse.GetValue(output)}");
            return 0;
        });
        return command;
    }
}
